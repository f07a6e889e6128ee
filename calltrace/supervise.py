"""Start the program and wait for it the way a shell would, plus what a
tracer owes its user (docs/RUNTIME.md, "calltrace run"):

  - calltrace is the child subreaper (prctl PR_SET_CHILD_SUBREAPER): a
    process that outlives its parent is reparented to us, not to init, and
    `calltrace run` waits for every process the program started (as strace
    -f does) before converting;
  - the program starts with the signal mask and dispositions calltrace was
    given (posix_spawn; Python's own SIGPIPE/SIGXFSZ ignore is undone);
  - Ctrl-C and Ctrl-\\ from the terminal reach the program (same process
    group) and not us; SIGINT, SIGQUIT, SIGTERM, SIGHUP, SIGUSR1 and SIGUSR2
    sent to calltrace itself are passed on to the program (to the processes
    it left, once it has ended);
  - after the program ends, Ctrl-C stops waiting for the processes it left.
"""
from __future__ import annotations

import ctypes
import errno
import os
import signal
import sys
import threading
import time

PR_SET_CHILD_SUBREAPER = 36
KEYBOARD = (signal.SIGINT, signal.SIGQUIT)
PASSED = (signal.SIGTERM, signal.SIGHUP, signal.SIGUSR1, signal.SIGUSR2)
WATCHED = {*KEYBOARD, *PASSED, signal.SIGCHLD}


def become_subreaper() -> bool:
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        return libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) == 0
    except (OSError, AttributeError):
        return False


class Supervisor:
    """One program started by `calltrace run`, and the processes it leaves."""

    def __init__(self):
        self.pid = 0
        self.returncode: int | None = None
        self.abandoned: list[int] = []      # traced processes we stopped waiting for
        self._mask = None

    def start(self, path: str, argv: list[str], env: dict[str, str]) -> int:
        become_subreaper()
        self._mask = signal.pthread_sigmask(signal.SIG_BLOCK, WATCHED)
        try:
            self.pid = os.posix_spawn(path, argv, env, setsigmask=self._mask,
                                      setsigdef=(signal.SIGPIPE, signal.SIGXFSZ))
        except OSError:
            self.restore()
            raise
        return self.pid

    def restore(self) -> None:
        if self._mask is not None:
            signal.pthread_sigmask(signal.SIG_SETMASK, self._mask)
            self._mask = None

    def wait(self) -> int:
        """Wait for the program, then for every process it left (they are
        ours now). Returns the program's status as Popen does (-N: killed by
        signal N). The signals stay blocked until `restore()`: a Ctrl-C from
        now on is one for the conversion (Interrupts)."""
        told, ended = False, None
        try:
            while True:
                left = self._reap()
                if self.returncode is not None:
                    if not left:
                        return self.returncode
                    ended = ended or time.monotonic()
                    # Said when the wait is long enough to be noticed.
                    left = children() if not told and time.monotonic() - ended > 0.9 else []
                    if left:
                        told = True
                        print(f"calltrace: the program ended; waiting for the process"
                              f"{'es' if len(left) > 1 else ''} it left running ({', '.join(map(str, left))}); "
                              "Ctrl-C stops waiting", file=sys.stderr, flush=True)
                got = wait_signal(WATCHED, 0.5 if ended else 1.0)
                if got is None or got[0] == signal.SIGCHLD:
                    continue
                signo, code = got
                from_terminal = signo in KEYBOARD and code > 0    # SI_KERNEL
                if self.returncode is not None and signo == signal.SIGINT and from_terminal:
                    self.abandoned = children()
                    return self.returncode
                if not from_terminal:
                    for pid in [self.pid] if self.returncode is None else children():
                        _send(pid, signo)
        except BaseException:
            self.restore()
            raise

    def _reap(self) -> bool:
        """Collect the program's status, and the orphans given to us; True
        while we have children left."""
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG | _WALL)
            except ChildProcessError:
                return False
            if pid == 0:
                return True
            if pid == self.pid:
                self.returncode = os.waitstatus_to_exitcode(status)


# Orphans include the runtime's helpers, cloned with no exit signal: only
# __WALL reaps those.
_WALL = 0x40000000


def children() -> list[int]:
    """Our child processes (the orphans reparented to us, once the program
    has ended)."""
    me = os.getpid()
    found = []
    for name in os.listdir("/proc"):
        if name.isdigit():
            try:
                with open(f"/proc/{name}/stat", "rb") as f:
                    fields = f.read().rsplit(b")", 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) == me and fields[0] not in (b"Z", b"X"):
                found.append(int(name))
    return sorted(found)


class _Timespec(ctypes.Structure):
    _fields_ = [("tv_sec", ctypes.c_long), ("tv_nsec", ctypes.c_long)]


_libc = ctypes.CDLL(None, use_errno=True)
_libc.sigtimedwait.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_void_p]
_libc.sigtimedwait.restype = ctypes.c_int
_SIGINFO_BYTES = 128


def wait_signal(signals, timeout: float) -> tuple[int, int] | None:
    """(signal, si_code) of one of the blocked `signals` taken from the
    pending set, or None after `timeout` seconds or an interruption.
    Python's signal.sigtimedwait is not used: when a stop (Ctrl-Z, a
    debugger, a profiler's ptrace) interrupts it past its deadline it
    returns an uninitialised siginfo, a made-up signal we would pass on."""
    mask = (ctypes.c_ulong * (1024 // (8 * ctypes.sizeof(ctypes.c_ulong))))()
    bits = 8 * ctypes.sizeof(ctypes.c_ulong)
    for sig in signals:
        mask[(sig - 1) // bits] |= 1 << ((sig - 1) % bits)
    info = (ctypes.c_int * (_SIGINFO_BYTES // 4))()
    ts = _Timespec(int(timeout), int((timeout % 1) * 1e9))
    signo = _libc.sigtimedwait(mask, info, ctypes.byref(ts))
    if signo > 0:
        return signo, info[2]     # si_signo, si_errno, si_code
    err = ctypes.get_errno()
    if err in (errno.EAGAIN, errno.EINTR):
        return None               # time is up, or a stop: the caller's loop looks again
    raise OSError(err, os.strerror(err))


def _send(pid: int, sig: int) -> None:
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        pass


class Interrupts:
    """While the traces are written: the first Ctrl-C (or SIGTERM/SIGHUP)
    says what is going on and conversion goes on; a second one stops it,
    keeping the raw data, with the command that finishes the job. The work
    runs in a thread so that the second signal is acted on at once, even in
    the middle of the C conversion; what it leaves is in the raw folder."""

    def __init__(self, recovery: str, unblock=None):
        self.recovery, self.unblock = recovery, unblock
        self.count = 0

    def run(self, work):
        done: dict = {}

        def worker():
            try:
                done["value"] = work()
            except BaseException as e:
                done["error"] = e
        old = {s: signal.signal(s, self._handler) for s in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)}
        if self.unblock:
            self.unblock()
        try:
            t = threading.Thread(target=worker, name="calltrace-convert", daemon=True)
            t.start()
            while t.is_alive():
                t.join(0.1)
        except KeyboardInterrupt:
            print(f"calltrace: stopped before the traces were written; the raw data is kept: "
                  f"finish with `{self.recovery}`", file=sys.stderr)
            raise
        finally:
            for s, h in old.items():
                signal.signal(s, h)
        if "error" in done:
            raise done["error"]
        return done["value"]

    def _handler(self, sig, _frame):
        self.count += 1
        if self.count == 1:
            print(f"\ncalltrace: writing the trace; {signal.Signals(sig).name} again stops, keeping "
                  f"the raw data (then: {self.recovery})", file=sys.stderr, flush=True)
            return
        raise KeyboardInterrupt
