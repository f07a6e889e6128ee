"""Issue 6, hard cases: frames left without an exit hook (longjmp family,
siglongjmp out of a signal handler, pthread_exit) are closed where they were
left and flagged unwound, and what runs next nests where it really runs."""
from __future__ import annotations

import collections
import os
import subprocess

import pytest

from conftest import fixture, load_json, preload_env, run_cli, run_cli_or_kill, validate


def calls_of(thread) -> list[tuple[int, str, bool]]:
    return [(c["depth"], c["function"], bool(c.get("unwound"))) for c in thread["calls"]]


def trace(tmp_path, *args, name="t.json", timeout=120):
    out = tmp_path / name
    proc = run_cli("run", "-q", "-o", out, *args, cwd=tmp_path, timeout=timeout)
    assert out.exists(), proc.stderr.decode()
    return proc, validate(load_json(out))


U = True
JUMP_TREE = [(0, "main", False), (1, "run", False), (2, "a", U), (3, "b", U), (4, "c", U),
             (2, "after", False), (1, "done", False)]
TREES = {
    "longjmp": JUMP_TREE,
    "_longjmp": JUMP_TREE,
    "chk": JUMP_TREE,
    "sig": [(0, "main", False), (1, "run", False), (2, "a", U), (3, "b", U), (4, "c", U),
            (5, "handler", U), (6, "jumper", U), (2, "after", False), (1, "done", False)],
    "nested": [(0, "main", False), (1, "run", False), (2, "inner", U), (3, "a", U), (4, "b", U),
               (3, "c", U), (2, "after", False), (1, "done", False)],
}
OUTPUT = {"longjmp": b"longjmp 1\n", "_longjmp": b"_longjmp 1\n", "chk": b"chk 1\n",
          "sig": b"sig 1\n", "nested": b"nested 2\n"}


@pytest.mark.parametrize("opt", ["", "-O2"])
@pytest.mark.parametrize("mode", sorted(TREES))
def test_jump_closes_skipped_frames(tmp_path, mode, opt):
    proc, doc = trace(tmp_path, fixture("jumps" + opt), mode)
    assert proc.returncode == 0 and proc.stdout == OUTPUT[mode]
    (thread,) = doc["threads"]
    assert calls_of(thread) == TREES[mode]
    m = doc["metadata"]
    assert m["incomplete_calls"] == 0 and m["dropped_events"] == 0 and "notes" not in m
    # An unwound call ends where the jump was taken: before what follows starts.
    after = next(c for c in thread["calls"] if c["function"] == "after")
    for c in thread["calls"]:
        if c.get("unwound"):
            assert c["start_ns"] + c["duration_ns"] <= after["start_ns"]


@pytest.mark.parametrize("opt", ["", "-O2"])
def test_thousand_jumps_no_depth_drift(tmp_path, opt):
    proc, doc = trace(tmp_path, fixture("jumps" + opt), "loop")
    assert proc.stdout == b"loop 1000\n" and proc.returncode == 0
    (thread,) = doc["threads"]
    got = calls_of(thread)
    assert got[0] == (0, "main", False) and got[-1] == (1, "done", False)
    assert got[1:-1] == [(1, "run_once", False), (2, "a", U), (3, "b", U), (4, "c", U)] * 1000
    assert doc["metadata"]["total_calls"] == 4002


def test_depth_counter_restored_under_max_depth(tmp_path):
    # Were the run-time depth left 3 higher by each jump, calls would soon all
    # count as too deep; restored, exactly b and c of each round are.
    proc, doc = trace(tmp_path, fixture("jumps"), "loop", "--max-depth", "3")
    assert proc.returncode == 0
    m = doc["metadata"]
    assert (m["total_calls"], m["depth_limited_calls"]) == (2002, 2000)
    counts = collections.Counter(calls_of(doc["threads"][0]))
    assert counts == {(0, "main", False): 1, (1, "run_once", False): 1000, (2, "a", U): 1000,
                      (1, "done", False): 1}


def test_bare_preload_jumps(tmp_path):
    env = preload_env(CALLTRACE_OUTPUT="j.json")
    proc = subprocess.run([fixture("jumps"), "sig"], cwd=tmp_path, env=env, capture_output=True,
                          timeout=120)
    assert (proc.returncode, proc.stdout, proc.stderr) == (0, b"sig 1\n", b"")
    doc = validate(load_json(tmp_path / "j.json"))
    assert calls_of(doc["threads"][0]) == TREES["sig"]
    assert sorted(os.listdir(tmp_path)) == ["j.json"]


@pytest.mark.parametrize("opt", ["", "-O2"])
def test_pthread_exit_closes_frames_then_cleanup(tmp_path, opt):
    proc, doc = trace(tmp_path, fixture("texit" + opt), "cleanup")
    assert proc.returncode == 0 and proc.stdout == b"cleanup 7\n"
    main, quitter = doc["threads"]
    assert calls_of(main) == [(0, "main", False), (1, "spawn", False), (1, "after", False)]
    assert quitter["name"] == "quitter" and not quitter["main"]
    # The cleanup handler runs inside pthread_exit, after the frames were left.
    assert calls_of(quitter) == [(0, "run", U), (1, "deep1", U), (2, "deep2", U), (0, "cleanup", False)]
    m = doc["metadata"]
    assert (m["exit_status"], m["termination"], m["incomplete_calls"]) == (0, "exit", 0)


def test_exit_from_other_thread(tmp_path):
    proc, doc = trace(tmp_path, fixture("texit"), "exit")
    assert proc.returncode == 5
    main, other = doc["threads"]
    assert [(c["depth"], c["function"], c.get("incomplete")) for c in main["calls"]] == [
        (0, "main", True), (1, "waiter", True)]
    assert [(c["depth"], c["function"], c.get("incomplete")) for c in other["calls"]] == [
        (0, "run3", True), (1, "quit", True)]
    m = doc["metadata"]
    assert (m["exit_status"], m["termination"], m["incomplete_calls"]) == (5, "exit", 4)


def test_exit_from_other_thread_keeps_its_name(tmp_path):
    _, doc = trace(tmp_path, fixture("texit"), "exit")
    assert doc["threads"][1]["name"] == "exiter"


def test_main_thread_pthread_exit_process_ends(tmp_path):
    out = tmp_path / "t.json"
    proc = run_cli_or_kill("run", "-q", "-o", out, fixture("texit"), "main", cwd=tmp_path, timeout=120)
    assert proc.returncode == 0 and proc.stdout == b"worker done\n"
    doc = validate(load_json(out))
    main, worker = doc["threads"]
    assert calls_of(main) == [(0, "main", U), (1, "leave", U)]
    assert calls_of(worker) == [(0, "run2", False), (1, "work", False), (2, "leaf", False)]


def cpp_exit_trace(tmp_path, opt):
    proc, doc = trace(tmp_path, fixture("texit_cpp" + opt))
    assert (proc.returncode, proc.stdout) == (0, b"guard\n")
    main, other = doc["threads"]
    assert calls_of(main) == [(0, "main", False), (1, "after()", False)]
    return doc, other


@pytest.mark.parametrize("opt", ["", "-O2"])
def test_pthread_exit_through_cpp_frames(tmp_path, opt):
    # glibc unwinds the C++ frames: their exit hooks run after the trace closed
    # them, and the destructor it runs is recorded (not counted as too deep).
    doc, other = cpp_exit_trace(tmp_path, opt)
    assert calls_of(other) == [(0, "run(void*)", U), (1, "f1()", U), (2, "f2()", U),
                               (0, "Guard::~Guard()", False)]
    m = doc["metadata"]
    assert (m["depth_limited_calls"], m["dropped_events"], m["incomplete_calls"]) == (0, 0, 0)


def test_pthread_exit_through_cpp_frames_no_note(tmp_path):
    doc, _ = cpp_exit_trace(tmp_path, "")
    assert "notes" not in doc["metadata"]
