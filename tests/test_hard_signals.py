"""Issue 6, hard cases: signal handlers calling instrumented code (nested under
the interrupted call), SIGSEGV recovered by siglongjmp, SIGBUS, and C++
exceptions through instrumented frames."""
from __future__ import annotations

import collections

import pytest

from conftest import fixture, load_json, run_cli, validate


def trace(tmp_path, *args, name="t.json", env=None, check=validate, keep=True):
    """Run and read the trace; `keep=False` deletes it once read (3M-call
    traces are 200 MB each)."""
    out = tmp_path / name
    proc = run_cli("run", "-q", "-o", out, *args, cwd=tmp_path, env=env)
    assert out.exists(), proc.stderr.decode()
    doc = check(load_json(out))
    if not keep:
        out.unlink()
    return proc, doc


def light(doc):
    """For 3M-call traces (the schema check alone takes half a minute):
    the totals here, the nesting in check_timer."""
    assert doc["metadata"]["total_calls"] == sum(len(t["calls"]) for t in doc["threads"])
    return doc


def flags(thread):
    return [(c["depth"], c["function"], "U" if c.get("unwound") else "I" if c.get("incomplete") else "")
            for c in thread["calls"]]


@pytest.mark.parametrize("opt", ["", "-O2"])
def test_handler_calls_nest_under_interrupted_call(tmp_path, opt):
    proc, doc = trace(tmp_path, fixture("sighandler" + opt), "sync")
    assert (proc.returncode, proc.stdout) == (0, b"usr1 1\n")
    assert flags(doc["threads"][0]) == [(0, "main", ""), (1, "work", ""), (2, "on_usr1", ""),
                                        (3, "note", ""), (1, "done", "")]


@pytest.mark.parametrize("opt", ["", "-O2"])
def test_segv_handler_recovers_with_siglongjmp(tmp_path, opt):
    proc, doc = trace(tmp_path, fixture("sighandler" + opt), "segv")
    assert (proc.returncode, proc.stdout) == (0, b"recovered 11\n")
    # note returned normally inside the handler; the jump then left on_segv and poke.
    assert flags(doc["threads"][0]) == [(0, "main", ""), (1, "guarded", ""), (2, "poke", "U"),
                                        (3, "on_segv", "U"), (4, "note", ""), (2, "resumed", "")]
    m = doc["metadata"]
    assert (m["exit_status"], m["termination"], m["incomplete_calls"]) == (0, "exit", 0)


@pytest.mark.parametrize("opt", ["", "-O2"])
def test_sigbus_kills_and_trace_kept(tmp_path, opt):
    proc, doc = trace(tmp_path, fixture("sighandler" + opt), "bus")
    assert proc.returncode == 135
    assert flags(doc["threads"][0]) == [(0, "main", "I"), (1, "touch", "I")]
    m = doc["metadata"]
    assert (m["exit_status"], m["termination"], m["signal"]) == (135, "signal", 7)


def check_timer(doc, stdout):
    alarms = int(stdout.split()[1])
    (thread,) = doc["threads"]
    calls = thread["calls"]
    counts = collections.Counter(c["function"] for c in calls)
    assert counts["leaf"] == 3000000 and counts["spin"] == counts["main"] == 1
    assert counts["on_alarm"] == counts["tick"]
    # Every handler the recorder did not see whole was dropped whole: 4 events
    # (on_alarm and tick, entry and exit), and counted.
    dropped = doc["metadata"]["dropped_events"]
    assert dropped % 4 == 0 and counts["tick"] + dropped // 4 == alarms
    assert alarms > 50
    # Nesting: under spin (between two leaf calls), under the leaf it
    # interrupted, or (rarely: the timer is armed just before spin starts and
    # disarmed just after it ends) directly under main.
    stack = []
    for c in calls:
        del stack[c["depth"]:]
        if c["function"] == "on_alarm":
            assert [s["function"] for s in stack] in (["main"], ["main", "spin"], ["main", "spin", "leaf"])
        if c["function"] == "tick":
            assert stack[-1]["function"] == "on_alarm"
        stack.append(c)


def test_timer_handlers_counted_exactly_big_buffer(tmp_path):
    # A 64 MiB buffer holds the whole run: no chunk switch for a signal to hit.
    proc, doc = trace(tmp_path, fixture("sighandler"), "timer",
                      env={"CALLTRACE_BUFFER_KB": "65536"}, check=light, keep=False)
    assert proc.returncode == 0 and proc.stdout.startswith(b"alarms ")
    check_timer(doc, proc.stdout)


def test_timer_handlers_default_buffer_ten_runs(tmp_path):
    for i in range(10):
        proc, doc = trace(tmp_path, fixture("sighandler"), "timer", name=f"t{i}.json",
                          check=light, keep=False)
        assert proc.returncode == 0, f"run {i}: exit status {proc.returncode}"
        check_timer(doc, proc.stdout)


CAUGHT = [(0, "main", ""), (1, "catcher()", ""), (2, "thrower()", ""), (3, "deeper()", ""),
          (4, "deepest()", ""), (2, "recover(char const*)", ""), (1, "rethrower()", ""),
          (2, "middle()", ""), (3, "deepest()", ""), (1, "recover(char const*)", "")]


@pytest.mark.parametrize("opt", ["", "-O2"])
def test_exceptions_close_frames_while_unwinding(tmp_path, opt):
    proc, doc = trace(tmp_path, fixture("exceptions" + opt))
    assert (proc.returncode, proc.stdout) == (0, b"caught deep\ncaught again\n")
    # g++ runs the exit hooks of -finstrument-functions frames during unwinding,
    # so frames an exception leaves are closed then, as ordinary returns.
    thread = doc["threads"][0]
    assert flags(thread) == CAUGHT
    recover = thread["calls"][5]
    for c in thread["calls"][2:5]:
        assert c["start_ns"] + c["duration_ns"] <= recover["start_ns"]
    assert doc["metadata"]["incomplete_calls"] == 0 and "notes" not in doc["metadata"]


@pytest.mark.parametrize("opt", ["", "-O2"])
def test_uncaught_exception_aborts_trace_kept(tmp_path, opt):
    proc, doc = trace(tmp_path, fixture("exceptions" + opt), "uncaught")
    assert proc.returncode == 134 and b"terminate called after throwing" in proc.stderr
    assert flags(doc["threads"][0]) == [(0, "main", "I"), (1, "deepest()", "I")]
    m = doc["metadata"]
    assert (m["exit_status"], m["termination"], m["signal"]) == (134, "signal", 6)


@pytest.mark.parametrize("how,status,sig", [("exit", 3, None), ("_exit", 4, None), ("abort", 134, 6),
                                            ("segv", 139, 11), ("term", 143, 15)])
def test_death_mid_call_optimized(tmp_path, how, status, sig):
    """tests/test_run.py covers these at -O0; the same at -O2."""
    proc, doc = trace(tmp_path, fixture("die-O2"), how)
    assert proc.returncode == status
    assert flags(doc["threads"][0]) == [(0, "main", "I"), (1, "level1", "I"), (2, "level2", "I"),
                                        (3, "level3", "I"), (4, "finish", "I")]
    m = doc["metadata"]
    assert (m["exit_status"], m["signal"], m["incomplete_calls"]) == (status, sig, 5)


@pytest.mark.parametrize("opt", ["", "-O2"])
def test_siglongjmp_out_of_timer_handler_300_times(tmp_path, opt):
    """The handler often interrupts the recorder's own hook and never returns
    to it: recording must go on (the hook's busy flag is cleared by the jump),
    each round's frames closed as unwound, every handler recorded or counted."""
    proc, doc = trace(tmp_path, fixture("sighandler" + opt), "jumpy",
                      env={"CALLTRACE_BUFFER_KB": "65536"}, check=light)
    assert (proc.returncode, proc.stdout) == (0, b"jumps 300\n")
    calls = doc["threads"][0]["calls"]
    kinds = collections.Counter((c["depth"], c["function"], bool(c.get("unwound"))) for c in calls)
    assert kinds[(1, "round_", False)] == 300 and kinds[(0, "main", False)] == 1
    assert (calls[-1]["depth"], calls[-1]["function"]) == (1, "final")
    spins = kinds[(2, "spin", True)]
    assert sum(n for (d, f, u), n in kinds.items() if f == "spin") == spins
    handlers = sum(n for (d, f, u), n in kinds.items() if f == "on_jump")
    assert all(u and d in (2, 3, 4) for (d, f, u) in kinds if f == "on_jump")
    m = doc["metadata"]
    assert handlers + m["dropped_events"] == 300      # a dropped handler: its entry, 1 event
    # A round without spin: the alarm pending at the unblock came before spin
    # (handler under round_), or cut spin's own entry hook short (dropped).
    assert kinds[(2, "on_jump", True)] <= 300 - spins <= kinds[(2, "on_jump", True)] + m["dropped_events"]
    assert m["incomplete_calls"] == 0 and "notes" not in m
    assert all(d == 3 for (d, f, u) in kinds if f == "leaf") and kinds[(3, "leaf", True)] <= 300


@pytest.mark.parametrize("opt", ["", "-O2"])
def test_siglongjmp_from_alternate_stack_above_target(tmp_path, opt):
    # The handler runs on a sigaltstack placed above the thread's stack, so
    # stack order cannot tell a live jmp_buf from a stale one there.
    proc, doc = trace(tmp_path, fixture("sighandler" + opt), "altsegv")
    assert (proc.returncode, proc.stdout) == (0, b"recovered 11\n")
    main, alt = doc["threads"]
    assert flags(main) == [(0, "main", "")] and alt["name"] == "alt"
    assert flags(alt) == [(0, "run_alt", ""), (1, "guarded", ""), (2, "poke", "U"),
                          (3, "on_segv", "U"), (4, "note", ""), (2, "resumed", "")]
