"""calltrace diff: per-function changes, regressions first, the CI gate."""
from __future__ import annotations

import pytest

import calltrace
from calltrace.analysis import compare, regressions
from conftest import fixture, run_cli
from postmortem_util import cli_stdout, leaf, write, write_demo


@pytest.fixture(scope="module")
def traces(tmp_path_factory):
    d = tmp_path_factory.mktemp("diff")
    base = write_demo(d / "base.json")
    # report 2 us slower, one more parse, compute's fib gone, a new function
    main = ("main", 0, 12_000, [leaf("parse", 100, 600), leaf("parse", 700, 1000), leaf("parse", 1100, 1200),
                                ("compute", 1500, 11_000, [leaf("report", 3000, 10_500)]),
                                leaf("cache", 11_000, 11_900)])
    new = write(d / "new.json", [(100, None, [main]), (101, "worker-1", [("work", 1000, 6000, [leaf("fib", 1200, 5200)])])])
    return base, new


def diff(*args, status=0) -> str:
    return cli_stdout("diff", *args, status=status)


def test_changes_regressions_first(traces):
    base, new = traces
    assert diff(base, new) == f"""\
total time per function, {base} -> {new}
traced time: 10.000 us -> 12.000 us; calls: 12 -> 9

     base        new     change       %  calls        function
 7.500 us   9.500 us  +2.000 us  +26.7%  1 -> 1       compute
10.000 us  12.000 us  +2.000 us  +20.0%  1 -> 1       main
 5.500 us   7.500 us  +2.000 us  +36.4%  1 -> 1       report
     0 ns     900 ns    +900 ns     new  0 -> 1 (+1)  cache
   800 ns     900 ns    +100 ns  +12.5%  2 -> 3 (+1)  parse
 4.900 us   4.000 us    -900 ns  -18.4%  6 -> 1 (-5)  fib
"""


def test_self_metric_and_all(traces):
    base, new = traces
    rows = diff("--metric", "self", "--all", base, new).splitlines()[4:]
    assert [r.split()[-1] for r in rows] == ["report", "cache", "compute", "parse", "work", "fib", "main"]
    assert rows[4] == "1.000 us  1.000 us       0 ns   +0.0%  1 -> 1       work"
    assert rows[6] == "1.700 us    700 ns  -1.000 us  -58.8%  1 -> 1       main"


@pytest.mark.parametrize("args, status, verdict", [
    (["--fail-above", "30"], 1, "FAIL: 2 function(s) slower by more than 30%: report +36.4%, cache new"),
    (["--fail-above", "30", "--min-time", "1us"], 1, "FAIL: 1 function(s) slower by more than 30%: report +36.4%"),
    (["--fail-above", "40", "--min-time", "1us"], 0, "ok: no function slower by more than 40%"),
    (["--fail-above", "20", "--min-time", "10us"], 0, "ok: no function slower by more than 20%"),
    (["--fail-above", "19.9", "--min-time", "10us"], 1, "FAIL: 1 function(s) slower by more than 19.9%: main +20.0%"),
])
def test_fail_above_gates(traces, args, status, verdict):
    base, new = traces
    assert diff(*args, base, new, status=status).splitlines()[-1] == verdict


def test_identical_traces(traces):
    base, _ = traces
    out = diff("--fail-above", "0", base, base)
    assert out.splitlines()[3:] == ["no differences", "", "ok: no function slower by more than 0%"]


def test_library(traces):
    base, new = (calltrace.load(p) for p in traces)
    changes = compare(base, new)
    assert [(c.function, c.delta_ns) for c in changes] == [
        ("compute", 2000), ("main", 2000), ("report", 2000), ("cache", 900), ("parse", 100),
        ("work", 0), ("fib", -900)]
    assert [c.function for c in regressions(changes, 25.0, 0)] == ["compute", "report", "cache"]


def test_real_traces(tmp_path):
    a, b = tmp_path / "a.json", tmp_path / "b.json"
    run_cli("run", "-q", "-o", a, fixture("recursion"), check=True)
    run_cli("run", "-q", "-o", b, fixture("workers"), check=True)
    p = run_cli("diff", "--all", a, b)
    assert p.returncode == 0
    # Two programs compared: allowed, said once on stderr.
    assert p.stderr.decode() == (f"calltrace: warning: the traces are of different programs: recursion ({a}) "
                                 f"and workers ({b})\n")
    out = p.stdout.decode().splitlines()
    rows = {r.split()[-1]: r for r in out[4:]}
    assert sorted(rows) == ["apply", "fib", "helper", "leaf", "main", "run", "spawn", "square", "total", "work"]
    assert "gone  15 -> 0 (-15)" in rows["fib"] and "new  0 -> 6 (+6)" in rows["leaf"]
