"""Rolling output: parts every N calls, each a valid trace, a cap on how many
are kept, and post-mortem commands reading a set of parts as one trace."""
from __future__ import annotations

import collections
import subprocess
import time

from conftest import ROOT, fixture, lib, load_json, require_tool, run_cli, validate
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


def test_signal_inside_meta_write_rolls_complete_parts(tmp_path):
    """SIGUSR1 delivered while the runtime writes dlopen's records (GDB
    stops the thread at the unlock after the module scan's first record,
    inside the META lock); the handler's 20,000 calls switch parts. The signal waits until the record is written, so every
    part gets the program and module records: every call has its name."""
    from harm import bounded
    ticks = 20_000
    gdb = require_tool("gdb", "gdb")
    script = tmp_path.parent / f"{tmp_path.name}.gdb"
    script.write_text("\n".join([
        "set pagination off", "set confirm off", "set startup-with-shell off",
        "set breakpoint pending on", f"set environment LD_PRELOAD={lib()}",
        "set environment CALLTRACE_OUTPUT=t.json", "set environment CALLTRACE_FLUSH_INTERVAL=2000",
        "set environment CALLTRACE_BUFFER_KB=16", "handle SIGUSR1 nostop noprint pass",
        "break load", "run", "delete 1",
        'eval "break ct_unlock thread %d", $_thread', "continue",
        "bt 10", "delete", "signal SIGUSR1", ""]))
    try:
        proc = bounded([gdb, "-batch", "-nx", "-x", script, "--args", fixture("sigroll"), ticks], tmp_path,
                       timeout=90)
    finally:
        script.unlink()
    out = (proc.stdout + proc.stderr).decode(errors="replace")
    assert "/runtime/meta.c:" in out and " ct_dl_note (" in out, out   # stopped inside the META write
    assert f"plugin 7 ticks {ticks}\n" in out, out
    deadline = time.monotonic() + 120     # the runtime's converters run detached
    while time.monotonic() < deadline and (list(tmp_path.glob("*.raw")) or not parts(tmp_path, "t")):
        time.sleep(0.1)
    docs = [validate(load_json(f)) for f in parts(tmp_path, "t")]
    # about 10 parts: one per 4,000 event words, and timing adds TIME words
    assert len(docs) >= 9 and not list(tmp_path.glob("*.raw"))
    names = collections.Counter(c["function"] for d in docs for t in d["threads"] for c in t["calls"])
    # A call is in the part it began in; none is left a bare address.
    assert names == {"main": 1, "load": 1, "on_usr1": 1, "tick": ticks, "use": 1, "plugin_entry": 1,
                     "twice": 1}, names
    for d in docs:
        assert d["metadata"]["program"] == fixture("sigroll")
        # a part's only note: returns of calls an earlier part holds
        assert all("returns without a recorded call" in n for n in d["metadata"].get("notes", [])), d
