"""Issue 9.4: a vfork() child runs on its parent's memory. Its instrumented
code and its _exit must leave the parent's recording alone; the program it
execs is traced as a process of its own."""
from __future__ import annotations

import os

import pytest

from conftest import fixture
from harm import bare, calls, native, run, same_as_native, trace

N = 10
PARENT = [(0, "main"), (1, "spawn_failing"), (1, "spawn_program")] + [(1, "work")] * N


def check(tmp_path, proc, ref):
    same_as_native(proc, ref)
    names = sorted(os.listdir(tmp_path))
    assert len(names) == 2 and "t.json" in names, names
    parent = trace(tmp_path / "t.json")
    m = parent["metadata"]
    assert calls(parent) == PARENT
    assert (m["exit_status"], m["termination"], m["dropped_events"]) == (0, "exit", 0)
    assert not any(c.get("incomplete") for c in parent["threads"][0]["calls"])
    (other,) = [n for n in names if n != "t.json"]
    child = trace(tmp_path / other)
    assert child["metadata"]["program"] == fixture("recursion")
    assert child["metadata"]["exit_status"] == 0 and child["metadata"]["total_calls"] == 21
    assert other == f"t.{child['metadata']['pid']}.json"


@pytest.mark.parametrize("opt", ["", "-O2"])
def test_vfork_child_leaves_parent_trace_alone_bare(tmp_path, opt):
    argv = [fixture("vforks" + opt), N, fixture("recursion")]
    ref = native(argv, tmp_path)
    assert ref.stdout.endswith(b" program 0 sum 90\n") and ref.stdout.startswith(b"failing 127")
    check(tmp_path, bare(argv, tmp_path), ref)


@pytest.mark.parametrize("opt", ["", "-O2"])
def test_vfork_child_leaves_parent_trace_alone_run(tmp_path, opt):
    argv = [fixture("vforks" + opt), N, fixture("recursion")]
    ref = native(argv, tmp_path)
    check(tmp_path, run(argv, tmp_path), ref)
