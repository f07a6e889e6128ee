"""The measuring pass while the program runs (runtime/live.c,
record/live.py): whatever it got to before the program ended, the trace is
byte for byte the one measured from scratch after it."""
import os
import subprocess
import time

import pyarrow.parquet as pq
import pytest

from calltrace.record.convert import convert
from calltrace.record.raw import RawStream, read_info
from conftest import fixture, run_cli

SMALL = {"CALLTRACE_BUFFER_KB": "16"}     # the smallest chunks: many segments to resume between


def _env(raw_dir, env: dict) -> dict:
    lib = run_cli("lib", check=True).stdout.decode().strip()
    return {**{k: v for k, v in os.environ.items() if not k.startswith("CALLTRACE_")},
            "LD_PRELOAD": lib, "CALLTRACE_RAW_DIR": str(raw_dir), **env}


def _raw(tmp_path, argv: list[str], cwd=None, **env) -> str:
    raw_dir = tmp_path / "raw"
    raw_dir.mkdir()
    subprocess.run(argv, env=_env(raw_dir, env), cwd=cwd, stdout=subprocess.DEVNULL, timeout=60, check=True)
    (raw,) = raw_dir.glob("*.raw")
    return str(raw)


def _stepped(raw: str, budget: int) -> tuple[RawStream, int]:
    """The file measured live, `budget` words a step, as far as it goes."""
    s = RawStream(raw, live=True)
    seen = [s.step(budget), s.step(budget)]
    while seen[-1] != seen[-2]:
        seen.append(s.step(budget))
    return s, seen[-1]


def _same_both_ways(tmp_path, raw: str, budget: int) -> int:
    convert(raw, str(tmp_path / "scratch.parquet"))
    stream, walked = _stepped(raw, budget)
    convert(raw, str(tmp_path / "live.parquet"), stream=stream)
    assert (tmp_path / "live.parquet").read_bytes() == (tmp_path / "scratch.parquet").read_bytes()
    return walked


@pytest.mark.parametrize("argv, env, segments", [
    (["callloop", "20000"], SMALL, 10),                    # 40k events in 16 KB chunks
    (["jumps", "loop"], SMALL, 3),                         # 1000 longjmps
    (["argloop", "3000"], {**SMALL, "CALLTRACE_CAPTURE_ARGS": "1"}, 10),   # arguments across segments
    # One segment, left unsealed at the exit: nothing to walk while the
    # program runs, all measured after it.
    (["jumps", "sig"], SMALL, 0), (["texit", "cleanup"], SMALL, 0),
    (["toggle"], {**SMALL, "CALLTRACE_TOGGLE_SIGNAL": "SIGUSR1"}, 0),
    (["threads"], SMALL, 0),
])
@pytest.mark.parametrize("budget", [1, 1 << 22])
def test_measured_in_steps_is_measured_at_once(tmp_path, argv, env, segments, budget):
    """Steps of one segment (a word's budget) or of all: every place the
    walk can stop and go on from, and the last segments walked after."""
    raw = _raw(tmp_path, [fixture(argv[0]), *argv[1:]], **env)
    assert _same_both_ways(tmp_path, raw, budget) >= segments


def test_library_reloaded_at_an_address_measures_from_scratch(tmp_path):
    """When a library was loaded where another had been (a cut: calls at
    those addresses from then on are another function), which function an
    address is depends on when, known only once the program has ended: the
    steps' work is dropped. Here `tick`'s address gets cuts at a third and
    two thirds of the run: its calls between them (all in segments walked
    in steps) are a function of their own."""
    raw = _raw(tmp_path, [fixture("callloop"), "20000"], **SMALL)
    convert(raw, str(tmp_path / "scratch.parquet"))
    rows = pq.read_table(tmp_path / "scratch.parquet", columns=["function", "start_ns"]).to_pydict()
    starts = [t for f, t in zip(rows["function"], rows["start_ns"]) if f == "tick"]
    with RawStream(raw) as whole:
        whole.analyze()
        tick = max(whole.functions(), key=lambda f: f.calls).addr
        npt = whole.summary().ns_per_tick
    # Halfway between two calls: the same side of the cut in ticks as in ns.
    at = [read_info(raw).start_ticks + int((starts[i - 1] + starts[i]) / 2 / npt)
          for i in (len(starts) // 3, 2 * len(starts) // 3)]
    cut = [(tick, tick + 1, at[0]), (tick, tick + 1, at[1])]
    with RawStream(raw) as whole:
        whole.set_cuts(cut)
        whole.analyze()
        want = sorted((f.addr, f.era, f.calls) for f in whole.functions())
    stream, walked = _stepped(raw, 1 << 22)
    with stream:
        assert walked >= 10
        stream.set_cuts(cut)
        stream.analyze()
        # Every function is known here: their names go in before the calls.
        assert sorted((f.addr, f.era) for f in stream.functions()) == [(a, e) for a, e, _ in want]
        stream.columns(0, lambda cols: None)     # the tables are made here
        assert sorted((f.addr, f.era, f.calls) for f in stream.functions()) == want
    assert [(a, e) for a, e, _ in want if a == tick] == [(tick, 0), (tick, 1), (tick, 2)]


def test_measured_while_the_program_writes(tmp_path):
    """Steps taken while the runtime is still writing the file, as
    `calltrace run` takes them: the same trace as measured afterwards."""
    raw_dir = tmp_path / "raw"
    raw_dir.mkdir()
    p = subprocess.Popen([fixture("callloop"), "2000000"], env=_env(raw_dir, SMALL), stdout=subprocess.DEVNULL)
    try:
        path = str(raw_dir / f"{p.pid}.raw")
        stream, walked = None, 0
        while p.poll() is None:
            time.sleep(0.005)
            if stream is None and os.path.exists(path):
                try:
                    stream = RawStream(path, live=True)
                except Exception:     # the header is not written yet
                    continue
            if stream is not None:
                walked = stream.step(1 << 12)
                assert walked >= 0
        assert p.wait(timeout=60) == 0
    finally:
        p.kill()
        p.wait()
    convert(path, str(tmp_path / "scratch.parquet"))
    if stream is None:
        stream = RawStream(path, live=True)
    convert(path, str(tmp_path / "live.parquet"), stream=stream)
    assert (tmp_path / "live.parquet").read_bytes() == (tmp_path / "scratch.parquet").read_bytes()


def test_run_to_parquet_counts_every_call(tmp_path):
    """End to end: the program's own count of its calls (callloop N: N under
    main, every 100th one `rare`), and each function's table made by the
    writing pass equal to a scan of the rows."""
    out = tmp_path / "t.parquet"
    run_cli("run", "-q", "-o", out, fixture("callloop"), "300000", check=True, env={"CALLTRACE_BUFFER_KB": "16"})
    import json
    doc = json.loads(pq.read_metadata(out).metadata[b"calltrace"])
    assert doc["metadata"]["total_calls"] == 300001
    funcs = {f["function"]: f for f in doc["functions"]}
    assert (funcs["main"]["calls"], funcs["tick"]["calls"], funcs["rare"]["calls"]) == (1, 297000, 3000)
    t = pq.read_table(out, columns=["function", "duration_ns"]).to_pydict()
    for name in ("tick", "rare"):
        durs = [d for f, d in zip(t["function"], t["duration_ns"]) if f == name]
        f = funcs[name]
        assert (f["total_ns"], f["self_ns"], f["min_ns"], f["max_ns"]) == (sum(durs), sum(durs), min(durs), max(durs))
    assert not (tmp_path / "t.parquet.raw").exists()


def _rss_file_kb() -> int:
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("RssFile:"))


def test_stepping_holds_no_more_of_the_file_than_it_walks(tmp_path):
    """Chunks are looked at again at every step; the pages read there (and
    the kernel's fault-around) are let go, so memory stays flat whatever
    the run's length: here a 48 MB raw file in 3000 chunks."""
    raw = _raw(tmp_path, [fixture("callloop"), "3000000"], **SMALL)
    assert os.path.getsize(raw) > 40 << 20
    before = _rss_file_kb()
    s = RawStream(raw, live=True)
    for _ in range(6):
        s.step(1 << 40)
    grown = _rss_file_kb() - before
    s.close()
    assert grown < 8 << 10, f"{grown} KB of the raw file still mapped"
