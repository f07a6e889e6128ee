"""Loading the recorder into a running process and pointing its hooks at it,
through GDB/MI (docs/ATTACH.md).

Attach: GDB attaches (every thread stops); the runtime is dlopen'ed from the
quietest thread and calltrace_attach(config) opens a session; then, with all
threads stopped, each thread's open instrumented frames go into
calltrace_attach_stacks, calltrace_attach_gen is bumped and every
instrumented module's GOT entries for the two hooks are written (GDB writes
through ptrace, so read-only RELRO pages are no obstacle); the program runs.
Detach: all threads stop, the GOT entries get their old values back, the
threads run until none is inside the recorder, calltrace_detach() closes the
session and GDB detaches. The recorder stays loaded, idle.
"""
from __future__ import annotations

import json
import os
import struct
import time

from elftools.elf.elffile import ELFFile
from elftools.elf.sections import SymbolTableSection

from ..debug import mi
from ..debug.session import Session
from ..errors import CalltraceError
from . import target as T

EXPORTS = ("calltrace_attach", "calltrace_detach", "calltrace_attach_stacks", "calltrace_attach_gen",
           "calltrace_attach_error", "calltrace_attach_state", T.ENTER, T.EXIT)
STACK_WORDS = 1 << 17
# Where a thread usually stands when it holds no lock the loader needs.
QUIET = ("nanosleep", "clock_nanosleep", "__GI___clock_nanosleep", "__clock_nanosleep", "usleep", "sleep",
         "poll", "__poll", "ppoll", "epoll_wait", "select", "pselect", "read", "__libc_read", "accept",
         "recv", "pause", "sigsuspend", "wait4", "waitpid")


def _exports(lib: str) -> dict[str, int]:
    with open(lib, "rb") as f:
        dynsym = ELFFile(f).get_section_by_name(".dynsym")
        assert isinstance(dynsym, SymbolTableSection)
        found = {s.name: s["st_value"] for s in dynsym.iter_symbols() if s.name in EXPORTS}
    missing = set(EXPORTS) - set(found)
    if missing:
        raise CalltraceError(f"the calltrace runtime {lib} lacks {sorted(missing)[0]}: reinstall calltrace")
    return found


class Injector:
    def __init__(self, pid: int, lib: str, work: str):
        self.pid, self.lib, self.work = pid, os.path.realpath(lib), work
        self.offsets = _exports(self.lib)
        self.base = 0
        self.session: Session | None = None
        self.saved: dict[int, int] = {}       # GOT entry -> value before attach
        self.mods: list[T.Module] = []
        self.thread = None                    # GDB thread id the calls run in
        self.ret = 0                          # where calls return to: the program's entry point
        self._result = os.path.join(work, "call.result")
        self._lib_span: tuple[int, int] | None = None
        self.exited: mi.Outcome | None = None
        self.notes: list[str] = []
        self.open_frames = 0

    def addr(self, name: str) -> int:
        return self.base + self.offsets[name]

    # -- GDB -----------------------------------------------------------------
    def _console(self, cmd: str, timeout: float = 30) -> mi.Record:
        return self.session.request(mi.console(cmd), timeout)

    def _call(self, fn: int, *args, timeout: float = 60) -> int:
        """fn(*args) in the chosen thread (gdb_scripts/ct_attach.py), while
        the other threads run; returns rax."""
        argv = ", ".join(repr(a) for a in args)
        self._console(f"python ct_attach.prepare({fn}, {self.ret}{', ' + argv if argv else ''})")
        self.session.request(f"-break-insert -t *{self.ret:#x}")
        self.session.write_async("-exec-continue")
        end = time.monotonic() + timeout
        while True:
            if time.monotonic() > end:
                if self._stop_all():
                    self._console(f"python ct_attach.finish({self._result!r})")
                raise CalltraceError(f"a call into process {self.pid} did not return within {timeout:.0f} s "
                                     "(a thread may hold a lock it needs); nothing was changed")
            for rec in self.session.poll(0.05):
                out = mi.outcome(rec)
                if out is not None:
                    self.exited = out
                    raise CalltraceError(f"process {self.pid} ended while calltrace was attaching", 1)
                if rec.kind == "notify" and rec.message == "stopped":
                    if rec.payload.get("reason") == "breakpoint-hit":
                        self._console(f"python ct_attach.finish({self._result!r})")
                        with open(self._result) as f:
                            return int(f.read())
                    sig = rec.payload.get("signal-name")
                    self.session.write_async(mi.console(f"signal {sig}" if sig else "continue"))

    def _eval(self, expr: str, timeout: float = 30) -> str:
        rec = self.session.request("-data-evaluate-expression " + mi.quote(expr), timeout)
        return str(rec.payload.get("value", ""))

    def _read(self, addr: int, size: int) -> bytes:
        rec = self.session.request(f"-data-read-memory-bytes {addr:#x} {size}")
        return bytes.fromhex(rec.payload["memory"][0]["contents"])

    def _write(self, addr: int, data: bytes) -> None:
        self.session.request(f"-data-write-memory-bytes {addr:#x} {data.hex()}")

    def _frames(self) -> list[dict]:
        path = os.path.join(self.work, "frames.json")
        self._console(f"python ct_attach.frames({path!r})", timeout=120)
        with open(path) as f:
            return json.load(f)

    def start_gdb(self) -> None:
        from ..debug.tracer import scripts_dir
        self.session = Session()
        for c in ("-gdb-set pagination off", "-gdb-set confirm off", "-gdb-set width 0",
                  "-gdb-set height 0", "-gdb-set mi-async on", "-gdb-set unwindonsignal on",
                  "-gdb-set unwind-on-terminating-exception on",
                  # separate debug info (libc's) would take a second to read;
                  # unwinding needs only each object's own .eh_frame
                  "-gdb-set debug-file-directory /nonexistent"):
            self.session.request(c)
        self._console(f"python import sys; sys.path.insert(0, {scripts_dir()!r}); import ct_attach")
        try:
            self.session.request(f"-target-attach {self.pid}", timeout=60)
        except CalltraceError as e:
            text = str(e)
            if "not permitted" in text.lower():
                raise T.not_permitted(self.pid) from None
            if "No such process" in text:
                raise CalltraceError(f"no process with pid {self.pid}", 1) from None
            raise CalltraceError(f"gdb could not attach to process {self.pid}: {text}", 1) from None
        self.session.wait_stopped(60)
        self._console("handle all nostop noprint pass")

    # -- attach --------------------------------------------------------------
    def _loaded_base(self) -> int | None:
        for m in T.modules(self.pid):
            if os.path.realpath(m.path) == self.lib:
                return m.bias
        return None

    def _blocked(self, frames: list[dict]) -> list[dict]:
        return [t for t in frames if _in_syscall(self.pid, t["tid"]) and t["name"] not in
                ("calltrace", "calltrace-watch")]

    def _choose_thread(self, frames: list[dict]) -> list[dict]:
        """A thread blocked in a system call: no vector register is live
        there, and it holds no lock the loader needs unless it sleeps
        holding one (a known wait first). When none is, the program runs on
        a little and is stopped again, for up to about 3 s. Returns the
        frames it was chosen from."""
        blocked = self._blocked(frames)
        for wait in range(1, 40):
            if blocked or self.exited is not None:
                break
            self.session.write_async("-exec-continue")
            time.sleep(0.002 * wait)
            if not self._stop_all():
                raise CalltraceError(f"process {self.pid} ended while calltrace was attached", 1)
            frames = self._frames()
            if self._lib_span and self._inside(frames):
                continue      # detaching: wait for a moment with no thread in the recorder too
            blocked = self._blocked(frames)
        if not blocked:
            raise CalltraceError(f"no thread of process {self.pid} is waiting in a system call right now, "
                                 "where calltrace can load its recorder safely; try again (a program "
                                 "that never waits cannot be attached to)", 1)
        quiet = [t for t in blocked if (t["fn0"] or "").split("@")[0] in QUIET]
        pick = (quiet or blocked)[0]
        self.thread = pick["num"]
        self.session.request(f"-thread-select {pick['num']}")
        return frames

    def load(self, config: str, mods: list[T.Module]) -> None:
        """dlopen the runtime (unless an earlier attach left it loaded) and
        open a session with `config`."""
        frames = self._frames()
        base = self._loaded_base()
        if base is None and _stale_runtime(self.pid, self.lib):
            raise CalltraceError(f"process {self.pid} has an earlier calltrace runtime loaded whose file has "
                                 "since been replaced (calltrace was reinstalled): it cannot be used again; "
                                 "restart the program to attach to it", 1)
        if base is not None:
            self.base = base
            frames = self._orphaned(mods, frames)
        self._choose_thread(frames)
        if base is None:
            self._dlopen()
            base = self._loaded_base()
            if base is None:
                raise CalltraceError("the calltrace runtime did not appear in the process after dlopen")
        self.base = base
        r = self._call(self.addr("calltrace_attach"), config)
        if r & 0xffffffff:
            msg = self._eval(f"(char *){self.addr('calltrace_attach_error'):#x}")
            raise CalltraceError(f"the recorder could not start in process {self.pid}: "
                                 f"{_c_string(msg) or 'unknown error'}", 1)

    def _orphaned(self, mods: list[T.Module], frames: list[dict]) -> list[dict]:
        """A calltrace killed while attached left GOT entries pointing at the
        (idle) recorder: point them back at glibc's hooks and let threads
        leave the recorder before its old file is closed."""
        ours = {self.addr(T.ENTER): T.ENTER, self.addr(T.EXIT): T.EXIT}
        stale = {}
        for m in mods:
            for slots in m.slots.values():
                for slot in slots:
                    value = struct.unpack("<Q", self._read(slot, 8))[0]
                    if value in ours:
                        stale[slot] = ours[value]
        if not stale:
            return frames
        libc = T.libc_hooks(self.pid)
        for slot, name in stale.items():
            self._write(slot, struct.pack("<Q", libc[name]))
        self.notes.append("an earlier calltrace attach had been killed while attached: its GOT entries were "
                          "put back first (its raw trace stays where it was written)")
        return self._quiesce()

    def _symbol(self, name: str) -> int | None:
        try:
            v = self._eval(f"(long)&{name}")
        except CalltraceError:
            return None
        try:
            return int(v.split()[0], 0) & 0xFFFFFFFFFFFFFFFF
        except (ValueError, IndexError):
            return None

    def _dlopen(self) -> None:
        last = "the program has no dlopen (neither libc's dlopen nor __libc_dlopen_mode)"
        for name in ("dlopen", "__libc_dlopen_mode"):
            fn = self._symbol(name)
            if fn is None:
                continue
            if self._call(fn, self.lib, 2):
                return
            err = self._symbol("dlerror")
            last = "dlopen failed"
            if err is not None:
                p = self._call(err)
                if p:
                    last = _c_string(self._eval(f"(char *){p:#x}"))
            break
        hint = (" (static TLS is exhausted: start the program with GLIBC_TUNABLES="
                "glibc.rtld.optional_static_tls=4096)" if "static TLS" in last else "")
        raise CalltraceError(f"could not load the calltrace runtime into process {self.pid}: {last}{hint}", 1)

    def arm(self, mods: list[T.Module]) -> None:
        """With every thread stopped: the stacks, the generation, the GOT."""
        self.mods = mods
        table = self._stack_table(self._frames())
        self._write(self.addr("calltrace_attach_stacks"), table)
        gen_at = self.addr("calltrace_attach_gen")
        gen = struct.unpack("<I", self._read(gen_at, 4))[0]
        self._write(gen_at, struct.pack("<I", (gen + 1) & 0xffffffff))
        ours = {T.ENTER: self.addr(T.ENTER), T.EXIT: self.addr(T.EXIT)}
        self.saved = {}
        for m in mods:
            for name, slots in m.slots.items():
                for slot in slots:
                    self.saved[slot] = struct.unpack("<Q", self._read(slot, 8))[0]
        for m in mods:
            for name, slots in m.slots.items():
                for slot in slots:
                    self._write(slot, struct.pack("<Q", ours[name]))

    def _stack_table(self, frames: list[dict]) -> bytes:
        stacks = T.open_frames(frames, self.mods)
        words = [0]
        for th in frames:
            fns = stacks.get(th["tid"], [])
            if th["cut"]:
                self.notes.append(f"thread {th['tid']} was more than {len(th['pcs'])} frames deep at "
                                  "attach: the calls it was already in are not known")
                fns = []
            if len(words) + 2 + len(fns) > STACK_WORDS:
                self.notes.append("too many open frames at attach to list them all")
                break
            words += [th["tid"], len(fns), *fns]
            words[0] += 1
            self.open_frames += len(fns)
        return struct.pack(f"<{len(words)}Q", *words)

    def resume(self) -> None:
        self.session.write_async("-exec-continue")

    # -- while recording -------------------------------------------------------
    def poll(self, timeout: float) -> mi.Outcome | None:
        """The program's end, if GDB reports it; a signal the program got
        stops it under GDB (SIGINT, which GDB keeps for itself): pass it on."""
        for rec in self.session.poll(timeout):
            end = mi.outcome(rec)
            if end is not None:
                self.exited = end
                return end
            if rec.kind == "notify" and rec.message == "stopped":
                sig = rec.payload.get("signal-name") if isinstance(rec.payload, dict) else None
                self.session.write_async(mi.console(f"signal {sig}" if sig else "continue"))
        return None

    # -- detach ----------------------------------------------------------------
    def _stop_all(self) -> bool:
        """Stop every thread; False when the program ended meanwhile."""
        self.session.write_async("-exec-interrupt")
        end = time.monotonic() + 10
        while time.monotonic() < end:
            for rec in self.session.poll(0.05):
                out = mi.outcome(rec)
                if out is not None:
                    self.exited = out
                    return False
                if rec.kind == "notify" and rec.message == "stopped":
                    return True
        raise CalltraceError("the program did not stop for detaching within 10 s")

    def _inside(self, frames: list[dict]) -> list[int]:
        """Threads standing in the recorder's code (its own idle threads
        excepted: the prefault thread waiting, the watchdog)."""
        lo, hi = self._lib_span
        busy = []
        for th in frames:
            if th["name"] == "calltrace-watch":
                continue
            if th["name"] == "calltrace" and (th["fn0"] or "") == "syscall":
                continue
            if any(lo <= pc < hi for pc in th["pcs"]):
                busy.append(th["tid"])
        return busy

    def _quiesce(self) -> list[dict] | None:
        """Let the program run in short steps until no thread is inside the
        recorder; the threads' frames then, or None (gave up, or it ended)."""
        mod = next(m for m in T.modules(self.pid) if os.path.realpath(m.path) == self.lib)
        self._lib_span = (mod.lo, mod.hi)
        for _ in range(200):
            frames = self._frames()
            if not self._inside(frames):
                return frames
            self.session.write_async("-exec-continue")
            time.sleep(0.005)
            if not self._stop_all():
                return None
        self.notes.append("a thread stayed inside the recorder: its file was left open (idle)")
        return None

    def disarm(self) -> bool:
        """Put the GOT back, wait until no thread is in the recorder, close
        the session. False when the program ended before."""
        if not self._stop_all():
            return False
        for slot, value in self.saved.items():
            self._write(slot, struct.pack("<Q", value))
        self.saved = {}
        frames = self._quiesce()
        if frames is None:
            return self.exited is None
        self._choose_thread(frames)
        self._call(self.addr("calltrace_detach"), timeout=30)
        return True

    def detach(self) -> None:
        if self.session is None:
            return
        try:
            if self.exited is None:
                self.session.request("-target-detach", timeout=10)
        except CalltraceError:
            pass
        self.session.close()
        self.session = None

    def restore_after_error(self) -> None:
        """Attach failed half-way: never leave a GOT entry pointing at a
        session that is not recording."""
        if self.session is None or self.exited is not None:
            return
        try:
            for slot, value in self.saved.items():
                self._write(slot, struct.pack("<Q", value))
        except CalltraceError:
            pass


def _stale_runtime(pid: int, lib: str) -> bool:
    name = os.path.basename(lib) + " (deleted)"
    with open(f"/proc/{pid}/maps") as f:
        return any(line.rstrip("\n").endswith(name) for line in f)


def _in_syscall(pid: int, tid: int) -> bool:
    try:
        with open(f"/proc/{pid}/task/{tid}/syscall") as f:
            first = f.read().split()[0]
    except (OSError, IndexError):
        return False
    return first.isdigit()


def _c_string(value: str) -> str:
    """The text of GDB's `0x... "text"` rendering of a char *."""
    q = value.find('"')
    return value[q + 1:value.rfind('"')] if q >= 0 else value
