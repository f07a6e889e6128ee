"""Issue 9 (11, 13, 14, 15) and issue 14: `calltrace run` as a process
manager. Orphans are waited for, signals reach the program once, Ctrl-C
during conversion loses nothing silently, a killed run leaves its raw data
next to the output (and the next run says so), two runs never write the same
output, and a wrapper chain leaves the one traced program's trace under -o."""
from __future__ import annotations

import contextlib
import glob
import json
import os
import pty
import re
import signal
import subprocess
import sys
import tempfile
import time

import pytest

from conftest import _cli_env, fixture, load_json, run_cli, shape, validate
from test_run import RECURSION_TREE

BOUND = 120     # seconds: a hang, never a speed figure


@contextlib.contextmanager
def launched(tmp_path, *args, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
             prefix=()):
    """`calltrace ARGS` in a session of its own, killed with everything it
    started if the test leaves it running."""
    proc = subprocess.Popen([*prefix, sys.executable, "-m", "calltrace", *map(str, args)], cwd=tmp_path,
                            env=_cli_env(None), stdin=stdin, stdout=stdout, stderr=stderr,
                            start_new_session=True)
    try:
        yield proc
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        for f in (proc.stdin, proc.stdout, proc.stderr):
            if f:
                f.close()
        proc.wait()


def until(cond, what: str):
    deadline = time.monotonic() + BOUND
    while not cond():
        if time.monotonic() > deadline:
            pytest.fail(f"never happened: {what}")
        time.sleep(0.01)


def program_pid(raw_dir) -> int:
    path = os.path.join(raw_dir, "run.json")
    until(lambda: os.path.exists(path) and os.path.getsize(path), f"{path} written")
    return json.load(open(path))["pid"]


def gone(pid: int) -> bool:
    """Ended and reaped (by calltrace, or by init for an orphan)."""
    return not os.path.exists(f"/proc/{pid}")


# --- 9.11: a child that outlives its parent ---------------------------------

@pytest.mark.parametrize("how", ["", "daemon"])
def test_orphan_outliving_the_program_is_traced(tmp_path, how):
    proc = run_cli("run", "-o", "o.json", fixture("orphan"), "1000", *[how] * bool(how), cwd=tmp_path,
                   timeout=BOUND)
    assert (proc.returncode, proc.stdout) == (0, b"parent done\nchild done 1000\n")
    names = sorted(os.listdir(tmp_path), key=lambda n: n != "o.json")
    assert len(names) == 2 and names[0] == "o.json", names
    parent, child = validate(load_json(tmp_path / names[0])), validate(load_json(tmp_path / names[1]))
    pm, cm = parent["metadata"], child["metadata"]
    assert names[1] == f"o.{cm['pid']}.json"
    assert shape(parent["threads"][0]["calls"]) == [(0, "main"), (1, "start")]
    assert shape(child["threads"][0]["calls"]) == [(0, "work")] * 1000
    assert (cm["termination"], cm["exit_status"]) == ("exit", 0)
    err = proc.stderr.decode()
    assert f"calltrace: 2 processes traced: {pm['pid']} (o.json), {cm['pid']} ({names[1]})\n" in err


# --- 9.13: signals and Ctrl-C ---------------------------------------------

def test_sigint_sent_to_calltrace_reaches_the_program(tmp_path):
    with launched(tmp_path, "run", "-q", "-o", "i.json", fixture("interrupts")) as proc:
        assert proc.stdout.readline() == b"ready\n"
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=BOUND)
    assert (proc.returncode, out, err) == (0, b"sigint 1\n", b"")
    assert shape(validate(load_json(tmp_path / "i.json"))["threads"][0]["calls"]) == [
        (0, "main"), (1, "arm"), (1, "wait_for"), (2, "on_int")]


def test_wait_signal_takes_the_pending_signal():
    """supervise.wait_signal: the signal sent and its si_code (SI_TKILL,
    negative: from a process, not the terminal), None when time is up."""
    from calltrace.supervise import wait_signal
    old = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGUSR2})
    try:
        t0 = time.monotonic()
        assert wait_signal({signal.SIGUSR2}, 0.2) is None
        assert time.monotonic() - t0 >= 0.19
        signal.raise_signal(signal.SIGUSR2)
        sig, code = wait_signal({signal.SIGUSR2}, 5.0)
        assert sig == signal.SIGUSR2 and code <= 0
        assert wait_signal({signal.SIGUSR2}, 0.0) is None
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, old)


def test_stopping_calltrace_sends_the_program_nothing(tmp_path):
    """calltrace stopped and continued (Ctrl-Z and fg, a debugger, a
    profiler) while it waits: longer than its wait's timeout, which made
    Python's sigtimedwait return a made-up signal that was passed on or
    failed as an internal error. The program gets only the one SIGINT."""
    with launched(tmp_path, "run", "-q", "-o", "i.json", fixture("interrupts")) as proc:
        assert proc.stdout.readline() == b"ready\n"
        for _ in range(3):
            os.kill(proc.pid, signal.SIGSTOP)
            time.sleep(1.3)
            os.kill(proc.pid, signal.SIGCONT)
            time.sleep(0.1)
        assert proc.poll() is None          # the program still waits for its SIGINT
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=BOUND)
    assert (proc.returncode, out, err) == (0, b"sigint 1\n", b"")


def test_ctrl_c_on_the_terminal_reaches_the_program_once(tmp_path):
    """The terminal sends SIGINT to the whole foreground process group: the
    program has it already, calltrace must not pass on a second one."""
    master, slave = pty.openpty()
    try:
        with launched(tmp_path, "run", "-q", "-o", "i.json", fixture("interrupts"), prefix=("setsid", "-c"),
                      stdin=slave, stdout=slave, stderr=slave) as proc:
            os.close(slave)
            seen = b""
            while b"ready" not in seen:
                seen += os.read(master, 1024)
            os.write(master, b"\x03")
            assert proc.wait(timeout=BOUND) == 0
            rest = b""
            with contextlib.suppress(OSError):
                while chunk := os.read(master, 1024):
                    rest += chunk
    finally:
        os.close(master)
    assert b"sigint 1\r\n" in rest, rest
    assert validate(load_json(tmp_path / "i.json"))["metadata"]["exit_status"] == 0


def convert_interrupted(tmp_path, signals: int):
    """SIGINT `signals` times while the 3M-call trace is being written."""
    with launched(tmp_path, "run", "-q", "-o", "c.json", fixture("callloop"), "3000000") as proc:
        assert proc.stdout.readline() == b"sum 4410001500000\n"
        pid = program_pid(tmp_path / "c.json.raw")
        until(lambda: gone(pid), "the program reaped")
        for _ in range(signals):
            proc.send_signal(signal.SIGINT)
            time.sleep(0.2)
        _, err = proc.communicate(timeout=BOUND)
    return proc.returncode, err.decode()


def total_calls(path) -> int:
    with open(path, "rb") as f:      # the metadata comes first; the file is 200 MB
        return int(re.search(rb'"total_calls":\s*(\d+)', f.read(4096)).group(1))


def test_one_ctrl_c_during_conversion_finishes_it(tmp_path):
    rc, err = convert_interrupted(tmp_path, 1)
    recovery = f"calltrace convert {tmp_path / 'c.json.raw'}"
    assert (rc, err) == (0, f"\ncalltrace: writing the trace; SIGINT again stops, keeping the raw data "
                            f"(then: {recovery})\n")
    assert total_calls(tmp_path / "c.json") == 3000001
    assert sorted(os.listdir(tmp_path)) == ["c.json"]


def test_second_ctrl_c_keeps_the_raw_data_and_says_how_to_finish(tmp_path):
    rc, err = convert_interrupted(tmp_path, 2)
    recovery = f"calltrace convert {tmp_path / 'c.json.raw'}"
    assert rc == 130
    assert err.endswith(f"calltrace: stopped before the traces were written; the raw data is kept: "
                        f"finish with `{recovery}`\n"), err
    assert sorted(os.listdir(tmp_path)) == ["c.json.raw"]
    proc = run_cli(*recovery.split()[1:], cwd=tmp_path, timeout=BOUND)
    assert proc.returncode == 0, proc.stderr
    assert total_calls(tmp_path / "c.json") == 3000001
    assert sorted(os.listdir(tmp_path)) == ["c.json"]


# --- issue 14: nothing left behind; 9.14: one run per output ----------------

def test_sigkill_leaves_raw_next_to_output_recoverable(tmp_path):
    with launched(tmp_path, "run", "-q", "-o", "e.json", fixture("echo"), "a") as proc:
        pid = program_pid(tmp_path / "e.json.raw")     # echo reads its stdin: it waits for us
        proc.kill()                       # calltrace only; the program goes on
        proc.wait(timeout=BOUND)
        # Its stream is still being written: converting now would cut it short.
        early = run_cli("convert", "-q", tmp_path / "e.json.raw", cwd=tmp_path, timeout=BOUND)
        raw = tmp_path / "e.json.raw" / f"{pid}.raw"
        assert (early.returncode, early.stderr.decode()) == (2, (
            f"calltrace: error: {raw}: process {pid} is still writing it (its calltrace was stopped, not the "
            "program): convert it once the program has ended\n"))
        proc.stdin.write(b"in\n")
        proc.stdin.close()
        until(lambda: gone(pid), "the program ended")
    assert sorted(os.listdir(tmp_path / "e.json.raw")) == [f"{pid}.raw", "lock", "run.json"]
    # The next run says where that data went and how to recover it.
    killed = proc.pid
    proc = run_cli("run", "-q", "-o", "e.json", fixture("echo"), "b", cwd=tmp_path, input=b"", timeout=BOUND)
    old = tmp_path / "e.json.raw.old"
    assert proc.returncode == 1 and proc.stderr == (
        f"calltrace: note: e.json.raw held the raw data of a calltrace run that ended before "
        f"converting it (pid {killed}); moved to e.json.raw.old: recover that trace with "
        f"`calltrace convert {old} -o e.old.json`\n").encode() + b"err\n"
    assert sorted(os.listdir(tmp_path)) == ["e.json", "e.json.raw.old"]
    assert load_json(tmp_path / "e.json")["metadata"]["argv"][1:] == ["b"]
    # Without -o it would go to e.json, which the later run wrote: refused.
    proc = run_cli("convert", "-q", old, cwd=tmp_path, timeout=BOUND)
    assert (proc.returncode, proc.stderr.decode()) == (2, (
        f"calltrace: error: {tmp_path / 'e.json'} was written after the run that left {old} began (by a "
        "later run?): name this run's trace with -o\n"))
    proc = run_cli("convert", "-q", old, "-o", "e.old.json", cwd=tmp_path, timeout=BOUND)
    assert proc.returncode == 0, proc.stderr
    assert sorted(os.listdir(tmp_path)) == ["e.json", "e.old.json"]
    assert load_json(tmp_path / "e.json")["metadata"]["argv"][1:] == ["b"]
    doc = validate(load_json(tmp_path / "e.old.json"))
    assert doc["metadata"]["argv"][1:] == ["a"] and doc["metadata"]["pid"] == pid
    assert shape(doc["threads"][0]["calls"]) == [(0, "main"), (1, "show"), (1, "copy")]
    assert (doc["metadata"]["termination"], doc["metadata"]["exit_status"]) == ("exit", 1)


def test_sigkill_with_dev_null_output_cleaned_by_the_next_run(tmp_path):
    with launched(tmp_path, "run", "-q", "-o", "/dev/null", fixture("echo")) as proc:
        mine = []
        pattern = os.path.join(tempfile.gettempdir(), "calltrace-*", "run.json")
        until(lambda: mine.extend(f for f in glob.glob(pattern) if os.path.getsize(f) and
                                  json.load(open(f))["calltrace_pid"] == proc.pid) or mine,
              "the raw folder in /tmp")
        proc.kill()
        proc.wait(timeout=BOUND)
    folder = os.path.dirname(mine[0])
    assert os.path.isdir(folder)
    assert run_cli("run", "-q", "-o", "/dev/null", fixture("recursion"), cwd=tmp_path).returncode == 0
    assert not os.path.exists(folder)


def test_two_runs_on_one_output_second_refused(tmp_path):
    with launched(tmp_path, "run", "-q", "-o", "s.json", fixture("echo"), "first") as first:
        program_pid(tmp_path / "s.json.raw")
        second = run_cli("run", "-q", "-o", "s.json", fixture("recursion"), cwd=tmp_path, timeout=BOUND)
        assert (second.returncode, second.stdout) == (2, b"")
        assert second.stderr == (f"calltrace: error: s.json is being written by another calltrace run "
                                 f"(pid {first.pid}): wait for it or choose another -o\n").encode()
        out, _ = first.communicate(b"", timeout=BOUND)
    assert first.returncode == 1 and out == b"arg: first\n"
    assert load_json(tmp_path / "s.json")["metadata"]["argv"][1:] == ["first"]
    assert sorted(os.listdir(tmp_path)) == ["s.json"]


# --- 9.15: wrapper chains ----------------------------------------------------

@pytest.mark.parametrize("how", ["script", "nice"])
def test_wrapper_chain_traced_program_gets_the_name(tmp_path, how):
    if how == "script":
        wrap = tmp_path / "wrap.sh"
        wrap.write_text(f"#!/bin/sh\nexec env {fixture('recursion')}\n")
        wrap.chmod(0o755)
        cmd = [wrap]
    else:
        cmd = ["--force", "nice", fixture("recursion")]
    proc = run_cli("run", "-o", "w.json", *cmd, cwd=tmp_path, timeout=BOUND)
    assert (proc.returncode, proc.stdout) == (0, b"fib=5 sq=25 h=7\n")
    assert sorted(os.listdir(tmp_path)) == sorted(["w.json"] + ["wrap.sh"] * (how == "script"))
    doc = validate(load_json(tmp_path / "w.json"))
    assert doc["metadata"]["program"] == fixture("recursion")
    assert shape(doc["threads"][0]["calls"]) == RECURSION_TREE
    assert (doc["metadata"]["exit_status"], doc["metadata"]["termination"]) == (0, "exit")
    err = proc.stderr.decode()
    assert "exit status 0," in err or "exit status 0\n" in err
    assert "None" not in err and "trace written to w.json\n" in err
