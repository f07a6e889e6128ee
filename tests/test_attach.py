"""`calltrace attach PID`: the recorder loaded into a running process.

The fixture (fixtures/attachee.c) counts its own recorded calls by reading
the GOT entry it calls its entry hook through, before and after each call:
`sure` calls had the entry pointing at the recorder both times, `straddle`
calls saw it change. Each trace's complete att_leaf calls must lie in
[sure, sure + straddle] (equal when nothing straddled), its output must go
on unbroken, and it must outlive every attach."""
from __future__ import annotations

import os
import queue
import signal
import subprocess
import sys
import threading
import time

import pytest

from conftest import ROOT, _cli_env, fixture, load_json, run_cli, validate

VARIANTS = ["attachee", "attachee-O2", "attachee-nopie", "attachee-noplt", "attachee-znow", "attachee-lib"]


class Attachee:
    """The fixture in a session of its own, its stdout read by a thread."""

    def __init__(self, name: str, seconds: int = 3600):
        self.proc = subprocess.Popen([fixture(name), str(seconds)], stdout=subprocess.PIPE, text=True,
                                     start_new_session=True)
        self.lines: queue.Queue[str] = queue.Queue()
        self.seen: list[str] = []
        threading.Thread(target=self._read, daemon=True).start()
        assert self.next_line(30).startswith("ready")

    def _read(self):
        for line in self.proc.stdout:
            self.lines.put(line.rstrip("\n"))
        self.lines.put("")

    def next_line(self, timeout: float = 60, prefix: str = "") -> str:
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            try:
                line = self.lines.get(timeout=max(0.01, end - time.monotonic()))
            except queue.Empty:
                break
            self.seen.append(line)
            if line.startswith(prefix):
                return line
            if line == "":
                break
        pytest.fail(f"the attached program printed no {prefix or 'line'!r} (last: {self.seen[-3:]})")

    def window(self) -> tuple[int, int]:
        line = self.next_line(prefix="window")
        f = dict(kv.split("=") for kv in line.split()[2:])
        return int(f["sure"]), int(f["straddle"])

    def ticks_unbroken(self) -> None:
        ticks = [int(l.split()[1]) for l in self.seen if l.startswith("tick")]
        assert ticks == list(range(ticks[0], ticks[0] + len(ticks))), ticks

    def stop(self):
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait()


@pytest.fixture
def attachee(request):
    made = []

    def start(name="attachee-O2", seconds=3600):
        made.append(Attachee(name, seconds))
        return made[-1]
    yield start
    for a in made:
        a.stop()


def cli_popen(*args) -> subprocess.Popen:
    """The installed CLI in a session of its own, stderr piped."""
    cwd = ROOT / "build" / "cli-cwd"
    cwd.mkdir(parents=True, exist_ok=True)
    return subprocess.Popen([sys.executable, "-m", "calltrace", *map(str, args)], cwd=cwd, env=_cli_env(None),
                            stderr=subprocess.PIPE, start_new_session=True)


def leaf_calls(doc: dict) -> int:
    return sum(1 for t in doc["threads"] for c in t["calls"]
               if c["function"] == "att_leaf" and not c.get("incomplete") and not c.get("before_attach"))


def attach(pid: int, out, *extra: str, duration: str = "0.3s") -> dict:
    # generous: on a loaded machine (2 cores, many test runs) an attach has taken 40 s
    r = run_cli("attach", pid, "--duration", duration, "-q", "-o", out, *extra, timeout=300)
    assert r.returncode == 0, r.stderr.decode()
    return validate(load_json(out))


@pytest.mark.parametrize("name", VARIANTS)
def test_attach_counts_match(attachee, tmp_path, name):
    a = attachee(name)
    for i in range(1):   # attaching again: test_twenty_attaches_in_a_row
        doc = attach(a.proc.pid, tmp_path / f"t{i}.json")
        sure, straddle = a.window()
        assert sure > 0
        assert sure <= leaf_calls(doc) <= sure + straddle
        m = doc["metadata"]
        assert m["termination"] == "detached" and m["exit_status"] is None
        assert m["options"]["attach"] is True
        # the loops each thread was already in when recording began
        before = sorted(c["function"] for t in doc["threads"] for c in t["calls"] if c.get("before_attach"))
        assert {"main", "worker"} <= set(before) and before.count("worker") == 2
        assert all(c["depth"] == 0 for t in doc["threads"] for c in t["calls"]
                   if c["function"] in ("main", "worker"))
    a.next_line(prefix="tick")
    a.ticks_unbroken()
    assert a.proc.poll() is None


def test_twenty_attaches_in_a_row(attachee, tmp_path):
    a = attachee("attachee-O2")
    out = tmp_path / "t.json"
    started = 0
    for i in range(20):
        doc = attach(a.proc.pid, out, duration="0.2s")
        sure, straddle = a.window()
        assert sure <= leaf_calls(doc) <= sure + straddle, i
        # threads started while attached (one every 100 ms) are recorded too
        started += sum(1 for t in doc["threads"] if t["calls"] and t["calls"][0]["function"] == "short_lived"
                       and not t["calls"][0].get("before_attach"))
    assert started >= 10
    a.next_line(prefix="tick")
    a.ticks_unbroken()
    windows = [int(l.split()[1]) for l in a.seen if l.startswith("window")]
    assert windows == list(range(1, 21))
    assert a.proc.poll() is None


def test_function_filter_and_depth(attachee, tmp_path):
    a = attachee("attachee-O2")
    doc = attach(a.proc.pid, tmp_path / "f.json", "-F", "^att_leaf$")
    sure, straddle = a.window()
    assert {c["function"] for t in doc["threads"] for c in t["calls"]} == {"att_leaf"}
    assert sure <= leaf_calls(doc) <= sure + straddle
    doc = attach(a.proc.pid, tmp_path / "n.json", "-N", "^att_leaf$")
    a.window()
    names = {c["function"] for t in doc["threads"] for c in t["calls"]}
    assert "att_leaf" not in names and "calls" in names
    # worker/short_lived (0) -> calls (1) -> att_leaf (2): every leaf is too deep
    doc = attach(a.proc.pid, tmp_path / "d.json", "--max-depth", "2")
    sure, straddle = a.window()
    assert leaf_calls(doc) == 0
    assert sure <= doc["metadata"]["depth_limited_calls"] <= sure + straddle


def test_capture_args(attachee, tmp_path):
    a = attachee("attachee")
    doc = attach(a.proc.pid, tmp_path / "a.json", "--capture-args", "-F", "^att_leaf$")
    a.window()
    leaves = [c for t in doc["threads"] for c in t["calls"] if c["function"] == "att_leaf"]
    assert leaves and all(c["args"][0]["name"] == "x" for c in leaves)
    assert {c["args"][0]["value"] for c in leaves} <= set(range(200))


def test_program_exits_while_attached(attachee, tmp_path):
    a = attachee("attachee-O2", seconds=3)
    out = tmp_path / "e.json"
    r = run_cli("attach", a.proc.pid, "-o", out, timeout=120)
    assert r.returncode == 0, r.stderr.decode()
    m = validate(load_json(out))["metadata"]
    assert (m["termination"], m["exit_status"]) == ("exit", 0)
    assert m["total_calls"] > 0
    assert b"exited with status 0 while attached" in r.stderr


def test_program_killed_while_attached(attachee, tmp_path):
    a = attachee("attachee-O2")
    out = tmp_path / "k.json"
    cli = cli_popen("attach", a.proc.pid, "-o", out)
    try:
        assert b"recording process" in cli.stderr.readline()
        time.sleep(0.3)
        a.proc.kill()
        _, err = cli.communicate(timeout=60)
    finally:
        if cli.poll() is None:
            os.killpg(cli.pid, signal.SIGKILL)
    assert cli.returncode == 0, err.decode()
    m = validate(load_json(out))["metadata"]
    assert (m["termination"], m["signal"]) == ("signal", 9)
    assert m["total_calls"] > 0


def test_calltrace_killed_while_attached(attachee, tmp_path):
    a = attachee("attachee-O2")
    cli = cli_popen("attach", a.proc.pid, "-o", tmp_path / "x.json")
    try:
        assert b"recording process" in cli.stderr.readline()
        cli.kill()                       # calltrace only: its GDB sees its pipe close
        cli.wait()
        deadline = time.monotonic() + 20
        while _tracer(a.proc.pid) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert _tracer(a.proc.pid) == 0
        for _ in range(2):
            a.next_line(prefix="tick")
        assert a.proc.poll() is None
    finally:
        if cli.poll() is None:
            os.killpg(cli.pid, signal.SIGKILL)
    # the next attach puts the orphaned GOT entries back and records again
    doc = attach(a.proc.pid, tmp_path / "again.json")
    sure, straddle = a.window()
    assert leaf_calls(doc) > 0
    assert any("killed while attached" in n for n in doc["metadata"]["notes"])
    a.next_line(prefix="tick")
    a.ticks_unbroken()


def _tracer(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        return int(next(l for l in f if l.startswith("TracerPid:")).split()[1])


def test_no_such_process(tmp_path):
    p = subprocess.Popen(["true"])
    p.wait()
    r = run_cli("attach", p.pid, "-o", tmp_path / "t.json")
    assert r.returncode == 1
    assert r.stderr.decode().strip() == f"calltrace: error: no process with pid {p.pid}"


def test_not_instrumented(tmp_path):
    p = subprocess.Popen(["sleep", "30"])
    try:
        r = run_cli("attach", p.pid, "-o", tmp_path / "t.json")
    finally:
        p.kill()
        p.wait()
    err = r.stderr.decode()
    assert r.returncode == 1 and err.count("\n") == 1
    assert "is not instrumented" in err and f"calltrace debug --pid {p.pid} --uninstrumented" in err
    assert _tracer(os.getpid()) == 0


def test_stopped_process_stays_stopped(attachee, tmp_path):
    """A process stopped by SIGSTOP is not let run by an attach."""
    a = attachee()
    os.kill(a.proc.pid, signal.SIGSTOP)
    until_state = time.monotonic() + 30
    while _state(a.proc.pid) != "T" and time.monotonic() < until_state:
        time.sleep(0.01)
    r = run_cli("attach", a.proc.pid, "-o", tmp_path / "t.json")
    assert (r.returncode, r.stderr.decode()) == (1, (
        f"calltrace: error: process {a.proc.pid} is stopped (SIGSTOP, Ctrl-Z): attaching would let it run; "
        f"continue it first (kill -CONT {a.proc.pid})\n"))
    assert _state(a.proc.pid) == "T" and _tracer(a.proc.pid) == 0
    assert os.listdir(tmp_path) == []


def _state(pid: int) -> str:
    with open(f"/proc/{pid}/status") as f:
        return next(l for l in f if l.startswith("State:")).split()[1]


def test_statically_linked(attachee, tmp_path):
    a = attachee("attachee-static", seconds=30)
    r = run_cli("attach", a.proc.pid, "-o", tmp_path / "t.json")
    err = r.stderr.decode()
    assert r.returncode == 1 and err.count("\n") == 1
    assert "is statically linked" in err and "GOT" in err and "--uninstrumented" in err
    assert a.proc.poll() is None


def test_debug_pid_detaches_on_ctrl_c(attachee, tmp_path):
    a = attachee("attachee")
    out, log = tmp_path / "d.json", tmp_path / "mi.log"
    cwd = ROOT / "build" / "cli-cwd"
    cwd.mkdir(parents=True, exist_ok=True)
    cli = subprocess.Popen([sys.executable, "-m", "calltrace", "debug", "--pid", str(a.proc.pid), "-F",
                            "^att_leaf$", "-q", "-o", str(out)], cwd=cwd,
                           env={**_cli_env(None), "CALLTRACE_MI_LOG": str(log)},
                           stderr=subprocess.PIPE, start_new_session=True)
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and "kind='result', message='running'" not in (log.read_text() if log.exists() else ""):
            time.sleep(0.1)
        time.sleep(0.5)
        cli.send_signal(signal.SIGINT)
        _, err = cli.communicate(timeout=60)
    finally:
        if cli.poll() is None:
            os.killpg(cli.pid, signal.SIGKILL)
    assert cli.returncode == 0, err.decode()
    doc = validate(load_json(out))
    m = doc["metadata"]
    assert (m["termination"], m["exit_status"], m["backend"]) == ("detached", None, "gdb")
    assert {c["function"] for t in doc["threads"] for c in t["calls"]} == {"att_leaf"}
    assert m["total_calls"] > 0
    # att_leaf calls nothing: a thread can be inside one call at detach, its last
    # (how many threads were in one depends on the load: short-lived ones pile up)
    open_at_end = 0
    for t in doc["threads"]:
        inc = [i for i, c in enumerate(t["calls"]) if c.get("incomplete")]
        assert inc in ([], [len(t["calls"]) - 1]), inc
        open_at_end += len(inc)
    assert m["incomplete_calls"] == open_at_end
    assert _tracer(a.proc.pid) == 0
    for _ in range(2):
        a.next_line(prefix="tick")
    a.ticks_unbroken()
    assert a.proc.poll() is None


def test_attach_to_parquet_keeps_before_attach(attachee, tmp_path):
    """The calls already running at attach keep their mark in Parquet: the
    same calls as in JSON converted from the one file."""
    a = attachee("attachee")
    out = tmp_path / "t.parquet"
    r = run_cli("attach", a.proc.pid, "--duration", "0.3s", "-q", "-o", out, timeout=300)
    assert r.returncode == 0, r.stderr.decode()
    run_cli("convert", out, "-o", tmp_path / "t.json", check=True)
    doc = validate(load_json(tmp_path / "t.json"))
    before = sorted(c["function"] for t in doc["threads"] for c in t["calls"] if c.get("before_attach"))
    assert {"main", "worker"} <= set(before) and before.count("worker") == 2
