"""Issue 9.12: under `calltrace run` the processes a program starts with an
environment of its own (posix_spawn or execve with an envp lacking
LD_PRELOAD and CALLTRACE_*) are traced all the same: the runtime puts itself
and its settings back into such environments. A bare LD_PRELOAD is the
user's own: a program that drops it drops it."""
from __future__ import annotations

import os

from conftest import fixture
from harm import bare, calls, native, run, same_as_native, trace

PARENT = [(0, "main"), (1, "spawn_clean"), (1, "exec_clean")]


def test_children_with_own_environment_traced_under_run(tmp_path):
    argv = [fixture("spawnenv"), fixture("recursion")]
    ref = native(argv, tmp_path)
    assert ref.stdout.endswith(b"spawn 0 exec 0\n") and ref.stdout.count(b"fib=5") == 2
    proc = run(argv, tmp_path, "--max-depth", "3")
    same_as_native(proc, ref)
    names = sorted(os.listdir(tmp_path))
    assert len(names) == 3 and "t.json" in names, names
    parent = trace(tmp_path / "t.json")
    assert calls(parent) == PARENT
    pid = parent["metadata"]["pid"]
    for name in names:
        if name == "t.json":
            continue
        child = trace(tmp_path / name)
        m = child["metadata"]
        # the execve'd one is its forked process's second image
        assert name in (f"t.{m['pid']}.json", f"t.{m['pid']}-1.json") and m["program"] == fixture("recursion")
        assert m["options"]["max_depth"] == 3          # the settings came back too
        assert m["exit_status"] == 0 and m["total_calls"] == 21 - m["depth_limited_calls"]
        assert m["parent_pid"] in (None, pid)


def test_bare_preload_leaves_explicit_environment_alone(tmp_path):
    argv = [fixture("spawnenv"), fixture("recursion")]
    ref = native(argv, tmp_path)
    proc = bare(argv, tmp_path)
    same_as_native(proc, ref)
    assert os.listdir(tmp_path) == ["t.json"]
    assert calls(trace(tmp_path / "t.json")) == PARENT
