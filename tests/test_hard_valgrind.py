"""Issue 6: the runtime under valgrind's memcheck is clean on the fixtures,
and the traces it records there are still exact."""
from __future__ import annotations

import glob
import re
import subprocess

import pytest

from conftest import clean_env, fixture, lib, load_json, require_tool, run_cli, validate

# (fixture, args, expected stdout, exit status, expected (depth, function) of the main thread)
CASES = [
    ("recursion", [], b"fib=5 sq=25 h=7\n", 0, None),
    ("jumps", ["sig"], b"sig 1\n", 0, [(0, "main"), (1, "run"), (2, "a"), (3, "b"), (4, "c"),
                                       (5, "handler"), (6, "jumper"), (2, "after"), (1, "done")]),
    ("jumps", ["nested"], b"nested 2\n", 0, [(0, "main"), (1, "run"), (2, "inner"), (3, "a"),
                                             (4, "b"), (3, "c"), (2, "after"), (1, "done")]),
    ("texit", ["cleanup"], b"cleanup 7\n", 0, [(0, "main"), (1, "spawn"), (1, "after")]),
    ("workers", [], b"sum 6\n", 0, [(0, "main"), (1, "spawn"), (1, "spawn"), (1, "spawn"), (1, "total")]),
    # (not the segv mode: its deliberate NULL store is an error memcheck reports)
    ("sighandler", ["sync"], b"usr1 1\n", 0, [(0, "main"), (1, "work"), (2, "on_usr1"),
                                               (3, "note"), (1, "done")]),
    ("exceptions", [], b"caught deep\ncaught again\n", 0, None),
    ("dlopener", ["close"], b"plugin 7 9\n", 0, [(0, "main"), (1, "load"), (1, "use"),
                                                 (2, "plugin_entry"), (3, "twice"), (1, "use"),
                                                 (2, "plugin_entry"), (3, "twice")]),
    ("forks", ["200"], None, 0, None),
    ("die", ["abort"], b"", 134, [(0, "main"), (1, "level1"), (2, "level2"), (3, "level3"),
                                  (4, "finish")]),
]


def memcheck(tmp_path, name, args, status, stdout, extra_env=()):
    """Run fixture `name` under memcheck (clean, the expected status and
    stdout); returns the traces it recorded, converted and validated."""
    valgrind = require_tool("valgrind", "valgrind")
    env = clean_env()
    # env(1) puts the runtime in the program only, not in valgrind's launcher.
    cmd = [valgrind, "-q", "--tool=memcheck", "--error-exitcode=99", "--trace-children=yes",
           "--leak-check=full", "--errors-for-leak-kinds=definite",
           # The runtime's prefault thread is detached and still running at
           # exit: its TLS block shows as "possibly lost", by design.
           "--show-leak-kinds=definite", "/usr/bin/env",
           f"LD_PRELOAD={lib()}", f"CALLTRACE_RAW_DIR={tmp_path}", *extra_env, fixture(name), *args]
    proc = subprocess.run(cmd, env=env, capture_output=True, timeout=300)
    expected = -6 if status == 134 else status
    assert proc.returncode == expected, proc.stderr.decode()[-3000:]
    assert not re.search(rb"^==\d+== ", proc.stderr, re.M), proc.stderr.decode()[-3000:]
    if stdout is not None:
        assert proc.stdout == stdout
    traces = []
    for raw in sorted(glob.glob(str(tmp_path / "*.raw"))):
        out = raw + ".json"
        run_cli("convert", raw, "-o", out, "-q", check=True)
        traces.append(validate(load_json(out)))
    return [t for t in traces if t["metadata"]["program"] == fixture(name)]


@pytest.mark.parametrize("name,args,stdout,status,tree", CASES,
                         ids=[f"{c[0]}-{'-'.join(c[1]) or 'default'}" for c in CASES])
def test_memcheck_clean(tmp_path, name, args, stdout, status, tree):
    mine = memcheck(tmp_path, name, args, status, stdout)
    assert len(mine) == (2 if name == "forks" else 1)
    if tree is not None:
        main = next(t for t in mine[0]["threads"] if t["main"])
        assert [(c["depth"], c["function"]) for c in main["calls"]] == tree


def test_memcheck_clean_capture_and_filter_in_a_library(tmp_path):
    """The capture plan and the filter, both reaching into libshapes-O2.so."""
    (mine,) = memcheck(tmp_path, "linked-O2", [], 0, b"area=120 label=-3\n",
                       ["CALLTRACE_CAPTURE_ARGS=1", "CALLTRACE_FUNCTION=^shape_"])
    calls = mine["threads"][0]["calls"]
    assert [(c["depth"], c["function"], [a["value"] for a in c["args"]]) for c in calls] == [
        (0, "shape_area", [{"x": 1, "y": 2}, {"x": 4, "y": 6}, "CM"]),
        (1, "scaled", [12, "CM"]),
        (0, "shape_label", ["box", -7, 1.5])]
