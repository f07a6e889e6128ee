"""Issue 9.5: nothing the runtime does in a forked child or a signal handler
waits on a lock another context holds. fork() while other threads are inside
the runtime (thread churn), and a fatal signal landing while the same thread
holds the META lock (thread exit, dlopen), driven there by GDB."""
from __future__ import annotations

import collections
import os
import re
import signal

import pytest

from conftest import fixture, require_tool
from harm import bare, bounded, lib, native, run, same_as_native, trace

N = 600


def churn_check(tmp_path, proc, ref):
    same_as_native(proc, ref)
    assert os.listdir(tmp_path) == ["t.json"]   # children made no call after fork(): no trace
    threads = int(re.search(rb"^threads (\d+)$", proc.stderr, re.M).group(1))
    doc = trace(tmp_path / "t.json")
    m = doc["metadata"]
    count = collections.Counter(c["function"] for t in doc["threads"] for c in t["calls"])
    assert count == {"main": 1, "reap": N, "churner": 1, "body": threads}
    assert (m["exit_status"], m["dropped_events"], m["incomplete_calls"]) == (0, 0, 0)


def test_fork_loop_with_thread_churn_bare(tmp_path):
    ref = native([fixture("forkchurn"), N], tmp_path)
    assert ref.stdout == f"forks {N} sum {sum(i % 7 for i in range(N))}\n".encode()
    churn_check(tmp_path, bare([fixture("forkchurn"), N], tmp_path, timeout=90), ref)


def test_fork_loop_with_thread_churn_run(tmp_path):
    ref = native([fixture("forkchurn-O2"), N], tmp_path)
    churn_check(tmp_path, run([fixture("forkchurn-O2"), N], tmp_path, timeout=90), ref)


def gdb_signal_inside_meta_lock(tmp_path, argv, first_stop, via, sig="SIGTERM"):
    """Stop at `first_stop`, then where the same thread next holds the META
    lock (at its ct_unlock, called from `via`), and deliver `sig` to that
    very thread. SIGTERM is blocked there and arrives as the lock is let go;
    SIGSEGV (a fault, never blocked) lands inside: the runtime's fatal
    handler finds the lock its own and leaves its records out."""
    gdb = require_tool("gdb", "gdb")
    script = tmp_path.parent / f"{tmp_path.name}.gdb"
    script.write_text("\n".join([
        "set pagination off", "set confirm off", "set startup-with-shell off",
        "set breakpoint pending on", f"set environment LD_PRELOAD={lib()}",
        "set environment CALLTRACE_OUTPUT=t.json", f"handle {sig} nostop noprint pass",
        f"break {first_stop}", "run", "delete 1",
        # This thread's own ct_unlock (the others run on: one may be about
        # to take the lock itself).
        'eval "break ct_unlock thread %d", $_thread', "continue",
        "bt 10", "delete", f"signal {sig}", ""]))
    try:
        proc = bounded([gdb, "-batch", "-nx", "-x", script, "--args", *argv], tmp_path, timeout=90)
    finally:
        script.unlink()
    out = (proc.stdout + proc.stderr).decode(errors="replace")
    assert "/runtime/meta.c:" in out and f" {via} (" in out, out   # stopped inside the META code
    assert f"Program terminated with signal {sig}" in out, out
    doc = trace(tmp_path / "t.json")
    m = doc["metadata"]
    number = getattr(signal, sig)
    assert (m["termination"], m["signal"], m["exit_status"]) == ("signal", number, 128 + number)
    return doc


@pytest.mark.parametrize("sig", ["SIGTERM", "SIGSEGV"])
def test_fatal_signal_while_thread_exit_holds_meta_lock(tmp_path, sig):
    doc = gdb_signal_inside_meta_lock(tmp_path, [fixture("forkchurn"), 3], "thread_done", "thread_done", sig)
    main = [t for t in doc["threads"] if t["main"]][0]
    got = [(c["depth"], c["function"], bool(c.get("incomplete"))) for c in main["calls"]]
    assert got[0] == (0, "main", True) and set(got[1:]) <= {(1, "reap", False), (1, "reap", True)}  # a reap still open at the death is incomplete


@pytest.mark.parametrize("sig", ["SIGTERM", "SIGSEGV"])
def test_fatal_signal_while_dlopen_holds_meta_lock(tmp_path, sig):
    doc = gdb_signal_inside_meta_lock(tmp_path, [fixture("dlopener")], "load", "ct_dl_note", sig)
    (t,) = doc["threads"]
    assert [(c["depth"], c["function"]) for c in t["calls"]][:2] == [(0, "main"), (1, "load")]
    assert t["calls"][0]["incomplete"]
