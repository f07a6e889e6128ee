"""Issue 6, hard cases: fork() and exec from a traced process, under
`calltrace run` and a bare LD_PRELOAD."""
from __future__ import annotations

import os
import subprocess

import pytest

from conftest import FIXTURES, fixture, load_json, preload_env, run_cli, validate

N = 100000
CHILD_NOTE = "1 returns without a recorded call were ignored (calls entered before recording started)"


def preload(tmp_path, *argv, env=None):
    full = preload_env(CALLTRACE_OUTPUT="t.json", **(env or {}))
    return subprocess.run([str(a) for a in argv], cwd=tmp_path, env=full, capture_output=True,
                          timeout=120)


def tree(thread):
    return [(c["depth"], c["function"], bool(c.get("incomplete"))) for c in thread["calls"]]


def check_fork_pair(tmp_path):
    names = sorted(os.listdir(tmp_path))
    assert len(names) == 2 and "t.json" in names, names
    (child_name,) = [n for n in names if n != "t.json"]
    parent = validate(load_json(tmp_path / "t.json"))
    child = validate(load_json(tmp_path / child_name))
    pm, cm = parent["metadata"], child["metadata"]
    assert child_name == f"t.{cm['pid']}.json"
    assert cm["parent_pid"] == pm["pid"] and pm["parent_pid"] is None and cm["pid"] != pm["pid"]
    (pt,) = parent["threads"]
    (ct,) = child["threads"]
    assert tree(pt) == [(0, "main", False), (1, "split", False), (1, "side", False)] + \
        [(2, "leaf", False)] * N + [(1, "reap", False)]
    assert tree(ct) == [(0, "side", False)] + [(1, "leaf", False)] * N + [(0, "finish", True)]
    assert ct["tid"] == cm["pid"] and ct["main"] and pt["tid"] == pm["pid"]
    assert (pm["exit_status"], pm["termination"], pm["dropped_events"]) == (0, "exit", 0)
    assert (cm["exit_status"], cm["termination"], cm["dropped_events"]) == (3, "exit", 0)
    assert cm["notes"] == [CHILD_NOTE] and "notes" not in pm
    assert cm["program"] == pm["program"] and cm["argv"] == pm["argv"]


@pytest.mark.parametrize("opt", ["", "-O2"])
def test_fork_run_each_side_own_trace(tmp_path, opt):
    proc = run_cli("run", "-q", "-o", "t.json", fixture("forks" + opt), str(N), cwd=tmp_path)
    assert proc.returncode == 0
    assert sorted(proc.stdout.splitlines()) == [f"child {N}".encode(),
                                               f"parent {N} child-status 3".encode()]
    check_fork_pair(tmp_path)


def test_fork_bare_preload(tmp_path):
    proc = preload(tmp_path, fixture("forks"), N)
    assert proc.returncode == 0 and proc.stderr == b""
    assert sorted(proc.stdout.splitlines()) == [f"child {N}".encode(),
                                               f"parent {N} child-status 3".encode()]
    check_fork_pair(tmp_path)


FIRST = [(0, "main", True), (1, "before", True)]
SECOND = [(0, "main", False), (1, "second", False), (2, "third", False)]


def exec_pair(tmp_path):
    names = sorted(os.listdir(tmp_path))
    assert len(names) == 2 and "t.json" in names, names
    first = validate(load_json(tmp_path / "t.json"))
    pid = first["metadata"]["pid"]
    assert names == sorted(["t.json", f"t.{pid}-1.json"])
    second = validate(load_json(tmp_path / f"t.{pid}-1.json"))
    assert tree(first["threads"][0]) == FIRST and tree(second["threads"][0]) == SECOND
    assert first["metadata"]["argv"][1:] == [first["metadata"]["argv"][1]]
    assert second["metadata"]["argv"][1:] == ["image2"] and second["metadata"]["pid"] == pid
    assert (second["metadata"]["exit_status"], second["metadata"]["termination"]) == (4, "exit")
    return first, second


@pytest.mark.parametrize("mode", ["v", "p", "f", "at"])
def test_exec_bare_both_images_traced(tmp_path, mode):
    proc = preload(tmp_path, fixture("execs"), mode,
                   env={"PATH": f"{FIXTURES}:{os.environ['PATH']}"})
    assert (proc.returncode, proc.stdout, proc.stderr) == (4, b"before\nimage2\n", b"")
    exec_pair(tmp_path)


@pytest.mark.parametrize("opt, mode", [("", "v"), ("-O2", "v"), ("", "f"), ("-O2", "at")])
def test_exec_run_both_images_traced(tmp_path, opt, mode):
    proc = run_cli("run", "-q", "-o", "t.json", fixture("execs" + opt), mode, cwd=tmp_path)
    assert (proc.returncode, proc.stdout) == (4, b"before\nimage2\n")
    exec_pair(tmp_path)


def test_exec_bare_first_image_says_exec(tmp_path):
    preload(tmp_path, fixture("execs"), "v")
    first, _ = exec_pair(tmp_path)
    assert (first["metadata"]["termination"], first["metadata"]["exit_status"]) == ("exec", None)


def test_exec_run_first_image_says_exec(tmp_path):
    run_cli("run", "-q", "-o", "t.json", fixture("execs"), "v", cwd=tmp_path)
    first, _ = exec_pair(tmp_path)
    assert (first["metadata"]["termination"], first["metadata"]["exit_status"]) == ("exec", None)


@pytest.mark.parametrize("how", ["run", "bare"])
def test_failed_exec_keeps_tracing(tmp_path, how):
    if how == "run":
        proc = run_cli("run", "-q", "-o", "t.json", fixture("execs"), "fail", cwd=tmp_path)
    else:
        proc = preload(tmp_path, fixture("execs"), "fail")
    assert (proc.returncode, proc.stdout) == (0, b"before\nafter\n")
    assert os.listdir(tmp_path) == ["t.json"]
    doc = validate(load_json(tmp_path / "t.json"))
    assert tree(doc["threads"][0]) == [(0, "main", False), (1, "before", False), (1, "after", False)]
    assert (doc["metadata"]["exit_status"], doc["metadata"]["termination"]) == (0, "exit")


@pytest.mark.parametrize("how", ["run", "bare"])
def test_vfork_exec_child_own_trace(tmp_path, how):
    """A vfork() child shares its parent's memory: its exec must leave the
    parent's stream alone, and the program it runs gets a trace of its own."""
    if how == "run":
        proc = run_cli("run", "-q", "-o", "t.json", fixture("execs"), "vfork", cwd=tmp_path)
    else:
        proc = preload(tmp_path, fixture("execs"), "vfork")
    assert (proc.returncode, proc.stdout) == (0, b"image2\nafter\n")
    parent = validate(load_json(tmp_path / "t.json"))
    names = sorted(os.listdir(tmp_path))
    (child_name,) = [n for n in names if n != "t.json"]
    child = validate(load_json(tmp_path / child_name))
    assert child_name == f"t.{child['metadata']['pid']}.json" and len(names) == 2
    assert tree(parent["threads"][0]) == [(0, "main", False), (1, "spawn", False), (1, "after", False)]
    assert tree(child["threads"][0]) == SECOND
    assert (parent["metadata"]["exit_status"], parent["metadata"]["termination"]) == (0, "exit")
    assert (child["metadata"]["exit_status"], child["metadata"]["argv"][1:]) == (4, ["image2"])


def _fib_args(n):
    return [n] + (_fib_args(n - 1) + _fib_args(n - 2) if n >= 2 else [])


@pytest.mark.parametrize("how", ["run", "bare"])
def test_exec_other_program_captures_its_own_arguments(tmp_path, how):
    """The exec'd image inherits CALLTRACE_PLAN (under run) but must not use
    its parent's plan: the other program's arguments are captured exactly."""
    args = ("-q", "--capture-args", "-o", "t.json", fixture("execs"), "to", fixture("recursion"))
    if how == "run":
        proc = run_cli("run", *args, cwd=tmp_path)
    else:
        proc = preload(tmp_path, fixture("execs"), "to", fixture("recursion"),
                       env={"CALLTRACE_CAPTURE_ARGS": "1"})
    assert (proc.returncode, proc.stdout) == (0, b"before\nfib=5 sq=25 h=7\n")
    first = validate(load_json(tmp_path / "t.json"))
    pid = first["metadata"]["pid"]
    second = validate(load_json(tmp_path / f"t.{pid}-1.json"))
    assert sorted(os.listdir(tmp_path)) == sorted(["t.json", f"t.{pid}-1.json"])
    calls = first["threads"][0]["calls"]
    assert [c["function"] for c in calls] == ["main", "before"]
    assert [a["value"] for a in calls[1]["args"]] == ["to"]
    calls = second["threads"][0]["calls"]
    assert second["metadata"]["program"] == fixture("recursion")
    assert [c["args"][0]["value"] for c in calls if c["function"] == "fib"] == _fib_args(5)
    assert [(a["name"], a["value"]) for c in calls if c["function"] == "square" for a in c["args"]] == [("x", 5), ("x", 1)]
