"""The GDB process: owner (spawn, kill) and MI I/O, through pygdbmi.

GDB's own stdin/stdout/stderr are pipes carrying MI; the program's streams
are calltrace's own, handed to GDB as extra inherited descriptors and put
back in place by the shell GDB starts the program with (``0<&3 1>&4 2>&5``),
so the program's output is never mixed into the MI stream and keeps the
same open files (offsets, append mode, ttys, sockets).

GDB runs in its own session: a Ctrl-C at the terminal reaches calltrace
only, which decides what the program gets (see tracer.py).
"""
from __future__ import annotations

import collections
import fcntl
import os
import shlex
import shutil
import subprocess
import time
from typing import Iterator

from pygdbmi.gdbcontroller import GdbController
from pygdbmi.IoManager import IoManager

from ..errors import CalltraceError
from . import mi

GDB_ARGS = ["-nx", "-nh", "-q", "-iex", "set auto-load off",
            "-iex", "set debuginfod enabled off", "--interpreter=mi3"]


def find_gdb() -> str:
    path = shutil.which(os.environ.get("CALLTRACE_GDB", "gdb"))
    if path is None:
        raise CalltraceError("gdb is not installed (Debian package: gdb)")
    return path


# The shell GDB starts the program with: bash reads `0<&12`; POSIX sh only
# takes one-digit descriptors.
SHELL = shutil.which("bash") or "/bin/sh"


def _high_dup(fd: int) -> int:
    """A copy of fd numbered 3 or more, for the shell's redirections."""
    new = fcntl.fcntl(fd, fcntl.F_DUPFD, 3)
    if new > 9 and not SHELL.endswith("bash"):
        os.close(new)
        raise CalltraceError("too many open files to hand the program its standard streams")
    return new


class Session(GdbController):
    """A GDB speaking MI3, with the program's stdio passed through."""

    def __init__(self, gdb: str | None = None):
        self.stdio = []
        for fd in (0, 1, 2):
            try:
                self.stdio.append(_high_dup(fd))
            except OSError:       # a closed standard stream: give it /dev/null
                self.stdio.append(_high_dup(os.open(os.devnull, os.O_RDWR)))
        self.records: list[mi.Record] = []
        self.queue: collections.deque[mi.Record] = collections.deque()
        self.pid: int | None = None          # the program's pid, once started
        self.owns_program = True             # False when attached: never killed here
        log = os.environ.get("CALLTRACE_MI_LOG")
        self.mi_log = open(log, "a") if log else None
        super().__init__([gdb or find_gdb(), *GDB_ARGS],
                         time_to_check_for_additional_output_sec=0.01)

    def spawn_new_gdb_subprocess(self) -> int:
        env = dict(os.environ)
        env["SHELL"] = SHELL               # GDB starts the program via $SHELL
        env.pop("BASH_ENV", None)
        env.pop("ENV", None)
        env.pop("LD_PRELOAD", None)        # ours goes to the program only
        try:
            self.gdb_process = subprocess.Popen(
                self.command, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                stderr=subprocess.PIPE, bufsize=0, env=env, pass_fds=self.stdio,
                start_new_session=True)
        except OSError as e:
            raise CalltraceError(f"cannot start gdb: {e.strerror}") from None
        for fd in self.stdio:
            os.close(fd)
        self.io_manager = IoManager(self.gdb_process.stdin, self.gdb_process.stdout,
                                    self.gdb_process.stderr,
                                    self.time_to_check_for_additional_output_sec)
        return self.gdb_process.pid

    def redirections(self) -> str:
        """Shell redirections giving the program calltrace's stdin/out/err."""
        a, b, c = self.stdio
        return f"0<&{a} 1>&{b} 2>&{c} {a}<&- {b}>&- {c}>&-"

    def program_args(self, args: list[str]) -> str:
        return " ".join(shlex.quote(a) for a in args) + " " + self.redirections()

    # -- I/O ------------------------------------------------------------------
    def poll(self, timeout: float = 0.1) -> Iterator[mi.Record]:
        """Records GDB wrote within timeout seconds (none is fine). A record
        not consumed by the caller (it stopped iterating) comes first next time."""
        while self.queue:
            yield self.queue.popleft()
        for rec in self._read(timeout):
            self.queue.append(rec)
        while self.queue:
            yield self.queue.popleft()

    def _read(self, timeout: float) -> Iterator[mi.Record]:
        if self.gdb_process is None or self.gdb_process.poll() is not None:
            if self.gdb_process is not None:
                # drain what is left, then report the death
                for d in self.io_manager.get_gdb_response(0, raise_error_on_timeout=False):
                    yield self._note(mi.from_dict(d))
            raise CalltraceError("gdb exited unexpectedly" + self._last_log())
        for d in self.io_manager.get_gdb_response(timeout, raise_error_on_timeout=False):
            yield self._note(mi.from_dict(d))

    def _note(self, rec: mi.Record) -> mi.Record:
        if self.mi_log is not None:         # CALLTRACE_MI_LOG=FILE: for bug reports
            self.mi_log.write(f"{rec}\n")
            self.mi_log.flush()
        self.records.append(rec)
        del self.records[:-200]
        if rec.kind == "notify" and rec.message == "thread-group-started":
            self.pid = int(rec.payload.get("pid", 0)) or None
        return rec

    def _last_log(self) -> str:
        logs = [r.payload.strip() for r in self.records
                if r.kind in ("log", "console") and isinstance(r.payload, str) and r.payload.strip()]
        return f": {logs[-1]}" if logs else ""

    def request(self, cmd: str, timeout: float = 60.0) -> mi.Record:
        """Send an MI command; wait for its result record. ^error raises."""
        self.io_manager.write(cmd, read_response=False)
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            for rec in self.poll(0.05):
                if rec.kind == "result":
                    msg = mi.error_message(rec)
                    if msg is not None:
                        raise CalltraceError(msg.strip().splitlines()[-1] if msg.strip() else msg)
                    return rec
        raise CalltraceError(f"gdb did not answer {cmd.split()[0]} within {timeout:.0f} s")

    def wait_stopped(self, timeout: float = 60.0) -> mi.Record:
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            for rec in self.poll(0.05):
                if rec.kind == "notify" and rec.message == "stopped":
                    return rec
        raise CalltraceError(f"the program did not start within {timeout:.0f} s")

    def write_async(self, cmd: str) -> None:
        self.io_manager.write(cmd, read_response=False)

    def close(self) -> None:
        """Make sure neither GDB nor the program outlives us."""
        proc = self.gdb_process
        if proc is None:
            return
        if proc.poll() is None:
            try:
                self.io_manager.write("-gdb-exit", read_response=False)
                proc.wait(timeout=5)
            except (OSError, ValueError, subprocess.TimeoutExpired):
                pass
        if proc.poll() is None:
            if self.pid and self.owns_program:
                try:
                    os.kill(self.pid, 9)
                except OSError:
                    pass
            proc.kill()
            proc.wait()
        for f in (proc.stdin, proc.stdout, proc.stderr):
            try:
                if f:
                    f.close()
            except OSError:
                pass
        self.gdb_process = None
