"""Rolling output: parts every N calls, each a valid trace, a cap on how many
are kept, and post-mortem commands reading a set of parts as one trace."""
from __future__ import annotations

import subprocess
import time

from conftest import ROOT, load_json, run_cli, validate
from test_preload import preload

N = 100_000          # leaf calls made by the workload
ENV = {"CALLTRACE_BUFFER_KB": "16"}   # 16 KiB chunks: 1,020 calls each


def workload(tmp_path) -> str:
    exe = tmp_path / "calls"
    subprocess.run(["gcc", "-g", "-O2", "-finstrument-functions", "-rdynamic",
                    str(ROOT / "bench" / "calls.c"), "-o", str(exe)], check=True)
    return str(exe)


def parts(tmp_path, stem="r"):
    return sorted(tmp_path.glob(f"{stem}.0*.json"))


def test_parts_cover_every_call(tmp_path):
    exe = workload(tmp_path)
    proc = run_cli("run", "-q", "-o", tmp_path / "r.json", "--flush-interval", "20000", exe, str(N),
                   cwd=tmp_path, env=ENV)
    assert proc.returncode == 0, proc.stderr.decode()
    files = parts(tmp_path)
    assert [f.name for f in files] == [f"r.{i:05d}.json" for i in range(1, len(files) + 1)]
    assert len(files) == 5 and not (tmp_path / "r.json").exists()
    docs = [validate(load_json(f)) for f in files]
    assert [d["metadata"]["part"]["index"] for d in docs] == list(range(1, 6))
    assert [d["metadata"]["termination"] for d in docs] == ["running"] * 4 + ["exit"]
    assert docs[-1]["metadata"]["exit_status"] == 0
    leaves = sum(c["function"] == "leaf" for d in docs for t in d["threads"] for c in t["calls"])
    assert leaves == N
    # A part ends at the first chunk boundary after the interval's calls.
    assert all(20_000 <= d["metadata"]["total_calls"] <= 21_020 for d in docs[:-1])


def test_rolling_keeps_the_newest(tmp_path):
    exe = workload(tmp_path)
    proc = run_cli("run", "-q", "-o", tmp_path / "r.json", "--flush-interval", "20000",
                   "--rolling", "2", exe, str(N), cwd=tmp_path, env=ENV)
    assert proc.returncode == 0
    assert [f.name for f in parts(tmp_path)] == ["r.00004.json", "r.00005.json"]
    assert load_json(tmp_path / "r.00005.json")["metadata"]["part"] == {
        "index": 5, "interval_calls": 20000, "keep": 2}


def test_bare_preload_rolling(tmp_path):
    exe = workload(tmp_path)
    proc = preload(tmp_path, exe, str(N), CALLTRACE_OUTPUT="b.json", CALLTRACE_FLUSH_INTERVAL="20000",
                   CALLTRACE_OUTPUT_ROLLING="1", CALLTRACE_ROLLING_KEEP="3", **ENV)
    assert proc.returncode == 0
    # Earlier parts are converted by a detached process while the program runs.
    deadline = time.monotonic() + 120     # a bound for a hang, not a speed figure
    while time.monotonic() < deadline:
        names = [f.name for f in parts(tmp_path, "b")]
        if names == ["b.00003.json", "b.00004.json", "b.00005.json"] and not list(tmp_path.glob("*.raw")):
            break
        time.sleep(0.1)
    assert names == ["b.00003.json", "b.00004.json", "b.00005.json"]
    for f in parts(tmp_path, "b"):
        validate(load_json(f))


def test_report_reads_parts_as_one_trace(tmp_path):
    exe = workload(tmp_path)
    run_cli("run", "-q", "-o", tmp_path / "r.json", "--flush-interval", "20000", exe, str(N),
            cwd=tmp_path, env=ENV)
    files = [str(f) for f in parts(tmp_path)]
    proc = run_cli("report", *files, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr.decode()
    leaf = next(l for l in proc.stdout.decode().splitlines() if l.endswith(" leaf"))
    assert leaf.split()[0] == str(N)
    info = run_cli("info", *files, cwd=tmp_path).stdout.decode()
    assert f"(+{len(files) - 1} parts)" in info
    replay = run_cli("replay", *files, cwd=tmp_path)
    assert replay.returncode == 0 and replay.stdout.decode().count(" leaf") == N


def test_parts_of_different_runs_refused(tmp_path):
    exe = workload(tmp_path)
    run_cli("run", "-q", "-o", tmp_path / "a.json", exe, "10", cwd=tmp_path)
    run_cli("run", "-q", "-o", tmp_path / "b.json", exe, "10", cwd=tmp_path)
    proc = run_cli("report", tmp_path / "a.json", tmp_path / "b.json", cwd=tmp_path)
    assert proc.returncode == 2 and b"not parts of one run" in proc.stderr
