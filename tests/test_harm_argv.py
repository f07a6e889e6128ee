"""Issue 9.14 (runtime side): a command line longer than the runtime keeps
(64 KiB) is cut with a note in the trace, never silently."""
from __future__ import annotations

import pytest

from conftest import fixture
from harm import bare, native, run, same_as_native, trace

ARGS = [f"{i:05d}" + "x" * 994 for i in range(100)]     # 100 arguments of 1000 bytes: 100,100 with NULs
NOTE = ("argv is cut: the command line has {} bytes and only its start was recorded "
        "(the last argument may be cut short)")


@pytest.mark.parametrize("how", ["bare", "run"])
def test_long_argv_cut_with_a_note(tmp_path, how):
    argv = [fixture("recursion"), *ARGS]
    ref = native(argv, tmp_path)
    proc = (bare if how == "bare" else run)(argv, tmp_path)
    same_as_native(proc, ref)
    m = trace(tmp_path / "t.json")["metadata"]
    total = sum(len(a) + 1 for a in argv)
    assert NOTE.format(total) in m["notes"]
    assert m["argv"][0] == fixture("recursion") and m["argv"][1:64] == ARGS[:63]
    assert sum(len(a) + 1 for a in m["argv"]) - 1 == 65536 and len(m["argv"]) == 67   # the last one cut, no NUL


def test_short_argv_whole_without_note(tmp_path):
    argv = [fixture("recursion"), *ARGS[:10]]
    proc = bare(argv, tmp_path)
    m = trace(tmp_path / "t.json")["metadata"]
    assert m["argv"] == argv and "notes" not in m
