"""calltrace report: the function table, sorting, per-thread tables, the
slowest calls; checked against the trace's own numbers and golden text."""
from __future__ import annotations

import json
import re

import pytest

import calltrace
from calltrace.analysis import slowest, thread_stats
from conftest import cli_process, fixture, run_cli
from postmortem_util import check_golden, cli_stdout, normalise_table, read_until_closed, write_demo


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    return write_demo(tmp_path_factory.mktemp("report") / "demo.json")


def report(*args) -> str:
    return cli_stdout("report", *args)


DEMO_REPORT = """\
/opt/demo/prog: 12 calls, 6 functions, 2 threads, 10.000 us

calls      total      self    average        min        max  function
    1   5.500 us  5.500 us   5.500 us   5.500 us   5.500 us  report
    6   4.900 us  4.900 us     816 ns     100 ns   4.000 us  fib
    1  10.000 us  1.700 us  10.000 us  10.000 us  10.000 us  main
    1   7.500 us  1.100 us   7.500 us   7.500 us   7.500 us  compute
    1   5.000 us  1.000 us   5.000 us   5.000 us   5.000 us  work
    2     800 ns    800 ns     400 ns     300 ns     500 ns  parse
"""


def test_plain_report(demo):
    assert report(demo) == DEMO_REPORT


def names(text: str) -> list[str]:
    return [line.split()[-1] for line in text.splitlines()[3:]]


@pytest.mark.parametrize("column, order", [
    ("function", ["compute", "fib", "main", "parse", "report", "work"]),
    ("calls", ["fib", "parse", "compute", "main", "report", "work"]),
    ("total", ["main", "compute", "report", "work", "fib", "parse"]),
    ("self", ["report", "fib", "main", "compute", "work", "parse"]),
    ("average", ["main", "compute", "report", "work", "fib", "parse"]),
    ("min", ["main", "compute", "report", "work", "parse", "fib"]),
    ("max", ["main", "compute", "report", "work", "fib", "parse"]),
])
def test_sort_on_every_column(demo, column, order):
    assert names(report("--sort", column, demo)) == order
    assert names(report("-s", column, "-n", "2", demo)) == order[:2]


def test_threads(demo):
    assert report("--threads", "--sort", "function", demo) == """\
/opt/demo/prog: 12 calls, 6 functions, 2 threads, 10.000 us

== thread 100 [main] ==
calls      total      self    average        min        max  function
    1   7.500 us  1.100 us   7.500 us   7.500 us   7.500 us  compute
    5     900 ns    900 ns     180 ns     100 ns     900 ns  fib
    1  10.000 us  1.700 us  10.000 us  10.000 us  10.000 us  main
    2     800 ns    800 ns     400 ns     300 ns     500 ns  parse
    1   5.500 us  5.500 us   5.500 us   5.500 us   5.500 us  report

== thread 101 worker-1 ==
calls     total      self   average       min       max  function
    1  4.000 us  4.000 us  4.000 us  4.000 us  4.000 us  fib
    1  5.000 us  1.000 us  5.000 us  5.000 us  5.000 us  work
"""
    assert report("--threads", "--tid", "101", "-n", "1", demo).splitlines()[2:] == [
        "== thread 101 worker-1 ==",
        "calls     total      self   average       min       max  function",
        "    1  4.000 us  4.000 us  4.000 us  4.000 us  4.000 us  fib"]


def test_slowest(demo):
    assert report("--slowest", "4", demo).splitlines()[2:] == [
        "slowest 4 calls:",
        " duration  tid     start  call path",
        "10.000 us  100      0 ns  main",
        " 7.500 us  100  1.500 us  main > compute",
        " 5.500 us  100  3.000 us  main > compute > report",
        " 5.000 us  101  1.000 us  work"]
    # captured arguments are shown on the slow call itself
    trace = calltrace.load(demo)
    calls = slowest(trace, 12)
    assert [(s.duration_ns, s.path) for s in calls][5:9] == [
        (900, ("main", "compute", "fib")), (500, ("main", "parse")),
        (400, ("main", "compute", "fib", "fib")), (300, ("main", "parse"))]
    assert calls[6].extra == {"args": [{"name": "s", "type": "const char *", "value": "a,b"}],
                              "return": {"type": "int", "value": 2}}
    assert report("--slowest", "12", demo).splitlines()[-6] == \
        "   500 ns  100    100 ns  main > parse(s=\"a,b\") = 2"


def test_bad_options(demo):
    for args, msg in [(["--slowest", "0"], "--slowest must be at least 1"),
                      (["--tid", "100"], "--tid needs --threads"),
                      (["--threads", "--tid", "5"], f"no thread 5 in {demo} (threads: 100, 101)")]:
        p = run_cli("report", *args, demo)
        assert (p.returncode, p.stderr.decode()) == (2, f"calltrace: error: {msg}\n")


@pytest.fixture(scope="module")
def recorded(tmp_path_factory):
    d = tmp_path_factory.mktemp("recorded")
    out = {}
    for name in ("recursion", "workers", "names", "deep"):
        path = d / f"{name}.json"
        run_cli("run", "-q", "-o", path, fixture(name), check=True)
        out[name] = str(path)
    return out


@pytest.mark.parametrize("name, args", [("recursion", []), ("names", []), ("workers", ["--threads"]),
                                        ("recursion", ["--slowest", "2"])])
def test_golden_fixture(recorded, name, args):
    tids = [t.tid for t in calltrace.load(recorded[name]).threads]
    text = report("--sort", "calls", *args, recorded[name])
    check_golden(f"report-{name}{''.join(args).replace('--', '-')}.txt",
                 normalise_table(text, sort_threads="--threads" in args, tids=tids))


def test_numbers_match_the_trace(recorded):
    """The table is the trace's functions table; per-thread tables computed
    from the calls add up to it exactly."""
    for name, path in recorded.items():
        doc = json.load(open(path))
        trace = calltrace.load(path)
        per = {}
        for t in trace.threads:
            for s in thread_stats(t):
                a = per.setdefault(s.function, [0, 0, 0, None, 0])
                a[0] += s.calls
                a[1] += s.total_ns
                a[2] += s.self_ns
                a[3] = s.min_ns if a[3] is None else min(a[3], s.min_ns)
                a[4] = max(a[4], s.max_ns)
        assert per == {f["function"]: [f["calls"], f["total_ns"], f["self_ns"], f["min_ns"], f["max_ns"]]
                       for f in doc["functions"]}, name
        rows = [re.split(r"\s{2,}", r.strip()) for r in report("--sort", "function", path).splitlines()[3:]]
        assert [(r[0], r[-1]) for r in rows] == sorted(
            ((str(f["calls"]), f["function"]) for f in doc["functions"]), key=lambda x: x[1])


def test_deep_recursion_counts_once(recorded):
    trace = calltrace.load(recorded["deep"])
    down = next(s for s in thread_stats(trace.threads[0]) if s.function == "down")
    outer = next(c for c in trace.threads[0].calls if c.function == "down")
    assert (down.calls, down.total_ns, down.max_ns) == (5000, outer.duration_ns, outer.duration_ns)
    assert report("--slowest", "1", recorded["deep"]).splitlines()[-1].endswith("  main")
    paths = [s.path for s in slowest(trace, 5001)]
    assert sorted(len(p) for p in paths) == list(range(1, 5002))
    assert max(paths, key=len) == ("main",) + ("down",) * 5000


def _bench_writer():
    import importlib.util
    from pathlib import Path
    spec = importlib.util.spec_from_file_location(
        "bench_postmortem", Path(__file__).resolve().parent.parent / "bench" / "bench_postmortem.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod.write_trace


def test_progress_bar_on_a_terminal_for_long_reads(tmp_path):
    """A read that takes longer than CALLTRACE_PROGRESS_DELAY (1 s; 0 here,
    as the C reader is too fast to be sure of a second) shows tqdm's bar on
    a terminal; in a pipe (every other test) stderr stays empty."""
    import os
    import pty
    import subprocess
    path = tmp_path / "big.json"
    _bench_writer()(str(path), 2_000_000)
    master, slave = pty.openpty()
    with cli_process("report", "--threads", "--slowest", "3", path, stdout=subprocess.PIPE, stderr=slave,
                     cwd="/", env={**os.environ, "CALLTRACE_PROGRESS_DELAY": "0"}) as proc:
        os.close(slave)
        err = read_until_closed(master).decode(errors="replace")
        out = proc.stdout.read().decode()
        assert proc.wait(timeout=300) == 0
    os.close(master)
    assert "reading calls:" in err and "B/s" in err, err[-500:]
    assert out.count("== thread ") == 4
    piped = run_cli("report", "--slowest", "1", path)
    assert piped.returncode == 0 and piped.stderr == b""


from hypothesis import given, settings, HealthCheck, strategies as st  # noqa: E402


def reference_stats(calls) -> dict:
    """The statistics straight from the definitions, quadratically: a call's
    children are the following calls one level deeper until the depth
    returns to its own; total counts calls with no same-named ancestor."""
    out: dict[str, list[int]] = {}
    for i, c in enumerate(calls):
        children, ancestors = [], []
        for d in calls[i + 1:]:
            if d.depth <= c.depth:
                break
            if d.depth == c.depth + 1:
                children.append(d)
        depth = c.depth
        for p in reversed(calls[:i]):
            if p.depth < depth:
                ancestors.append(p.function)
                depth = p.depth
        s = out.setdefault(c.function, [0, 0, 0, c.duration_ns, c.duration_ns])
        s[0] += 1
        s[1] += 0 if c.function in ancestors else c.duration_ns
        s[2] += max(0, c.duration_ns - sum(d.duration_ns for d in children))
        s[3] = min(s[3], c.duration_ns)
        s[4] = max(s[4], c.duration_ns)
    return out


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(st.lists(st.one_of(st.sampled_from(["f", "g", "h"]), st.none()), max_size=40),
                min_size=1, max_size=3))
def test_thread_stats_match_the_definitions(tmp_path, threads):
    """Per-thread statistics from the streamed calls equal a direct
    reading of the definitions in docs/FORMAT.md."""
    from calltrace.trace.writer import write_trace
    from postmortem_util import build_random, metadata
    b = build_random(threads)
    path = tmp_path / "r.json"
    write_trace(str(path), metadata(b), b.functions(), list(b.threads.values()))
    trace = calltrace.load(path)
    for t in trace.threads:
        got = {s.function: [s.calls, s.total_ns, s.self_ns, s.min_ns, s.max_ns] for s in thread_stats(t)}
        assert got == reference_stats(list(t.calls))
