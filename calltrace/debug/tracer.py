"""`calltrace debug` end to end: choose the breakpoints, drive GDB, build
and write the trace.

MI is used for control only (load, start, arm, continue, wait for the end);
the per-call work happens inside GDB (gdb_scripts/ct_gdb.py), which appends
events to a file this process tails for the progress bar.
"""
from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import sys
import tempfile
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

from elftools.elf.elffile import ELFFile

from .. import __version__
from ..errors import CalltraceError
from ..runtime import library_path
from ..symbols import Module
from ..symbols.code import HOOKS, Code
from ..symbols.dwarf import dwarf_functions
from ..symbols.elf import ElfSymbols, elf_symbols, is_instrumented
from ..symbols.select import Selection, modules
from ..trace.writer import write_trace
from . import events as E
from . import mi
from .session import Session


@dataclass
class Options:
    program: str                     # absolute path
    argv: list[str]                  # argv[0] first
    output: str = "calltrace.json"
    capture_args: bool = False
    capture_returns: bool = False
    deref: bool = False
    max_depth: int | None = None
    function: str | None = None      # -F: subtrees
    only: str | None = None          # --only: the functions themselves
    exclude: str | None = None       # -N
    uninstrumented: bool = False
    pretty: bool = False
    progress: bool | None = None     # None: when stderr is a terminal
    quiet: bool = False
    string_cap: int = 256
    pid: int | None = None           # attach to this running process instead


@dataclass
class Result:
    status: int
    metadata: dict
    functions: list
    stops: int
    per_stop_ns: int
    wall_s: float
    notes: list[str] = field(default_factory=list)


def scripts_dir() -> str:
    import calltrace.gdb_scripts as pkg
    return os.path.dirname(os.path.abspath(pkg.__file__))


def _hook_offsets(lib: str) -> dict:
    syms = elf_symbols(lib)
    return {"hook_offsets": {HOOKS[f.name]: f.start for f in syms.functions() if f.name in HOOKS},
            "hook_text": syms.text_addr}


def _sites(path: str, chosen: set[int]) -> list:
    """The hook calls inside the chosen functions of one ELF file."""
    syms = elf_symbols(path)
    with open(path, "rb") as f:
        code = Code(ELFFile(f), syms.lookup)
        return code.hook_sites([s for s in syms.functions() if s.start in chosen and s.size])


def _selection(sel: Selection, mods) -> dict | None:
    """What gdb_scripts/ct_select.py needs: the selected functions of the
    program (link-time addresses) and of its instrumented libraries."""
    if not sel.active:
        return None
    (_, inc, exc), libs = mods[0], mods[1:]
    return {"mode": "subtree" if sel.function is not None else "only" if sel.only is not None else None,
            "include": inc, "exclude": exc,
            "libs": [{"path": p, "text": elf_symbols(p).text_addr, "include": i, "exclude": x}
                     for p, i, x in libs if i or x]}


def plan(opts: Options, syms: ElfSymbols) -> dict:
    """The GDB-side configuration: which breakpoints, where, and which of
    the calls they see to record (-F/--only/-N as `calltrace run` means them)."""
    cfg = {"capture_args": opts.capture_args, "capture_returns": opts.capture_returns,
           "deref": opts.deref, "max_depth": opts.max_depth, "string_cap": opts.string_cap,
           "elf_entry": syms.entry}
    name = opts.argv[0]
    if syms.machine != "EM_X86_64":
        raise CalltraceError(f"{name}: only x86-64 programs are supported")
    if (opts.capture_args or opts.capture_returns or opts.uninstrumented) and not syms.has_debug_info:
        raise CalltraceError(f"{name} has no debug info: rebuild it with -g")
    sel = Selection(opts.function, opts.only, opts.exclude)
    mods = modules(opts.program, sel) if sel.active else [(opts.program, [], [])]
    (_, inc, exc) = mods[0]
    if sel.include is not None and not any(m[1] for m in mods):
        raise CalltraceError(f"no function of {name} or of the instrumented libraries it loads matches "
                             f"{sel.describe()}")
    cfg["select"] = _selection(sel, mods)
    if opts.capture_args:
        from ..symbols.params import inline_param_orders
        cfg["param_order"] = inline_param_orders(os.path.realpath(opts.program))
    if opts.uninstrumented:
        if sel.include is None:
            raise CalltraceError("--uninstrumented needs --only REGEX or --function REGEX (the functions "
                                 "to put breakpoints on)")
        # -F: a subtree may reach any function compiled from the program's sources.
        chosen = set(inc) | set(exc) if sel.only is not None else \
            set(inc) | set(exc) | set(dwarf_functions(opts.program).by_addr)
        funcs = [f for f in syms.functions() if f.start in chosen and f.size]
        with open(opts.program, "rb") as f:
            code = Code(ELFFile(f), syms.lookup)
            rets = [(s.addr, s.fn, s.kind, fn.size) for fn in funcs for s in code.return_sites(fn)]
        cfg.update(mode="plain", entries=sorted({f.name for f in funcs}), rets=rets)
        return cfg
    if not is_instrumented(opts.program):
        raise CalltraceError(f"{name} was not built with -finstrument-functions; rebuild it, or "
                             "trace chosen functions with --uninstrumented --only REGEX")
    if sel.only is not None or (sel.active and not syms.dynamic) or opts.pid is not None:
        # --only: breakpoints on the hook calls of the selected functions
        # alone; a static program, or one attached to (--pid: no recorder
        # preloaded to break in): on every hook call.
        every = sel.only is None
        sites = _sites(opts.program, {f.start for f in syms.functions()} if every else set(inc) | set(exc))
        libs = []
        for path, i, x in mods[1:]:
            lib_sites = _sites(path, {f.start for f in elf_symbols(path).functions()} if every else set(i) | set(x))
            if lib_sites:
                libs.append({"path": path, "text": elf_symbols(path).text_addr,
                             "sites": [(s.addr, s.kind) for s in lib_sites]})
        cfg.update(mode="sites", sites=[(s.addr, s.kind) for s in sites], lib_sites=libs)
        return cfg
    if not syms.dynamic:
        from ..symbols.elf import is_library
        if is_library(opts.program):
            raise CalltraceError(f"{name} is a shared library, not a program: debug the program that loads it")
        raise CalltraceError(f"{name} is statically linked: calltrace debug needs a dynamically "
                             "linked program (or --uninstrumented --only REGEX)")
    lib = os.path.realpath(library_path())
    cfg.update(mode="hooks", hook_lib=lib, **_hook_offsets(lib))
    return cfg


class _Interrupts:
    """First Ctrl-C (or SIGTERM, SIGHUP): the same signal to the program (its
    own handling decides). Second: the program is killed. The trace so far is
    written either way."""

    def __init__(self):
        self.signals: list[int] = []
        self.old = None

    def __enter__(self):
        def handler(sig, _frame):
            self.signals.append(sig)
        self.old = {s: signal.signal(s, handler)
                    for s in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)}
        return self

    def __exit__(self, *exc):
        for s, h in self.old.items():
            signal.signal(s, h)


def _progress(opts: Options):
    show = sys.stderr.isatty() if opts.progress is None else opts.progress
    if not show or opts.quiet:
        return None
    from tqdm import tqdm
    return tqdm(desc="calltrace debug", unit=" calls", file=sys.stderr, dynamic_ncols=True,
                mininterval=0.25, smoothing=0.3)


def trace(opts: Options) -> Result:
    syms = elf_symbols(opts.program)
    cfg = plan(opts, syms)
    span = syms.span
    work = tempfile.mkdtemp(prefix="calltrace-debug-")
    events_path = os.path.join(work, "events")
    cfg_path = os.path.join(work, "config.json")
    cfg.update(events=events_path, program=opts.program,
               args=None, preload=os.environ.get("LD_PRELOAD", ""))
    start_time = datetime.now(timezone.utc).astimezone().isoformat(timespec="milliseconds")
    log = E.EventLog(events_path)
    run_notes: list[str] = []
    session = Session()
    t0 = time.monotonic()
    bar = None
    try:
        try:
            cfg["args"] = session.program_args(opts.argv[1:])
            Path(cfg_path).write_text(json.dumps(cfg))
            for c in ("-gdb-set pagination off", "-gdb-set confirm off", "-gdb-set width 0",
                      "-gdb-set height 0"):
                session.request(c)
            if opts.pid is None:
                session.request("-file-exec-and-symbols " + mi.quote(opts.program))
            session.request(mi.console(
                f"python import sys; sys.path.insert(0, {scripts_dir()!r}); import ct_gdb; "
                f"ct_gdb.setup({cfg_path!r})"))
            if opts.pid is None:
                session.request(mi.console("starti"))
                first = session.wait_stopped()
                end = mi.outcome(first)
                if end is not None:
                    raise CalltraceError(f"{opts.argv[0]} ended before it started (status {end.status})")
            else:
                _attach(session, opts.pid)
            session.request(mi.console("python ct_gdb.arm()"))
            bar = _progress(opts)
            with _Interrupts() as intr:
                end = _run(session, log, bar, intr, run_notes)
            # the recorder writes its summary when GDB sees the exit; make sure
            # (a synchronous MI request) before GDB goes
            if not log.summary_written():
                try:
                    session.request(mi.console("python ct_gdb.REC.summary()"), timeout=30)
                except CalltraceError as e:
                    run_notes.append(f"the recorder's last events may be missing ({e})")
        finally:
            if bar is not None:
                bar.close()
            session.close()
        wall = time.monotonic() - t0
        log.read_new()
    finally:
        # also when GDB or the program failed: nothing of ours stays in /tmp
        shutil.rmtree(work, ignore_errors=True)
    return _write(opts, cfg, log, end, session.pid, start_time, wall, span, run_notes)


def _attach(session: Session, pid: int) -> None:
    """`calltrace debug --pid`: GDB attaches; Ctrl-C will detach (_run).
    SIGINT stops again (GDB interrupts with it), the program's own is passed
    on by _run."""
    from ..attach.target import not_permitted
    session.owns_program = False
    session.request("-gdb-set mi-async on")
    try:
        session.request(f"-target-attach {pid}", timeout=60)
    except CalltraceError as e:
        if "not permitted" in str(e).lower():
            raise not_permitted(pid) from None
        raise CalltraceError(f"gdb could not attach to process {pid}: {e}", 1) from None
    session.wait_stopped()
    session.request(mi.console("handle SIGINT stop print nopass"))


def _detach(session: Session) -> mi.Outcome:
    """Ctrl-C under --pid: stop, take the breakpoints out, let go."""
    session.write_async("-exec-interrupt")
    end = time.monotonic() + 10
    while time.monotonic() < end:
        for rec in session.poll(0.05):
            out = mi.outcome(rec)
            if out is not None:
                return out
            if rec.kind == "notify" and rec.message == "stopped":
                session.request("-break-delete")
                session.request(mi.console("python ct_gdb.REC.summary()"), timeout=30)
                session.request("-target-detach", timeout=10)
                return mi.Outcome(0, None, "detached")
    raise CalltraceError("the program did not stop for detaching within 10 s")


def _run(session: Session, log: E.EventLog, bar, intr: "_Interrupts", notes: list[str]):
    """Let the program run to its end. A signal to us (Ctrl-C, SIGTERM) is
    passed on to the program once; the second one kills it. A program GDB
    cannot resume (an ^error) is killed, with a note. If GDB itself stops
    answering after a kill, give up waiting and write what was recorded."""
    session.write_async("-exec-continue")
    killed_at = None
    forwarded = 0
    while True:
        if intr.signals and not session.owns_program:
            return _detach(session)
        if intr.signals[forwarded:] and session.pid:
            sig = intr.signals[forwarded] if forwarded == 0 else signal.SIGKILL
            forwarded = len(intr.signals)
            _kill(session.pid, sig)
            if sig == signal.SIGKILL and killed_at is None:
                killed_at = time.monotonic()
        for rec in session.poll(0.1):
            end = mi.outcome(rec)
            if end is not None:
                return end
            msg = mi.error_message(rec)
            if msg is None and rec.kind == "log" and str(rec.payload).startswith(
                    "Cannot insert breakpoint"):
                msg = str(rec.payload)          # GDB holds the program, says no more
            if msg is not None and killed_at is None:
                notes.append(f"gdb could not go on ({msg.strip()}): the program was killed")
                _kill(session.pid, signal.SIGKILL)
                killed_at = time.monotonic()
                session.write_async("-exec-continue")   # so that GDB sees it die
            elif rec.kind == "notify" and rec.message == "stopped":
                sig = rec.payload.get("signal-name") if not session.owns_program else None
                # a stop the program survives (attached: its own SIGINT, passed on)
                session.write_async(mi.console(f"signal {sig}") if sig else "-exec-continue")
        if killed_at is not None and time.monotonic() - killed_at > 10:
            notes.append("gdb did not report the end of the killed program")
            return mi.Outcome(128 + signal.SIGKILL, int(signal.SIGKILL), "killed")
        if bar is not None:
            n = log.count_new()
            if n:
                bar.update(n)


def _kill(pid: int | None, sig: int) -> None:
    if pid:
        try:
            os.kill(pid, sig)
        except OSError:
            pass


def _names(log: E.EventLog, program: str, span, bias: int) -> None:
    """Names of the program's own functions as `calltrace run` makes them."""
    from ..symbols.resolver import Resolver
    mods = [Module(bias, span[0] + bias, span[1] + bias, program)]
    own = [a for a in log.fninfo if mods[0].lo <= a < mods[0].hi]
    if not own:
        return
    try:
        infos = Resolver(mods).resolve(own)
    except CalltraceError:
        return
    for a, info in infos.items():
        d = log.fninfo[a]
        d["name"] = info.function
        d["linkage"] = info.symbol
        d["file"] = info.file or d.get("file")
        d["line"] = info.line or d.get("line")
        d["module"] = program


def _write(opts, cfg, log: E.EventLog, end, pid, start_time, wall, span, notes) -> Result:
    bias = log.summary.get("bias", 0)
    _names(log, opts.program, span, bias)
    cal = E.calibrate(log)
    main_tid = log.summary.get("pid") or pid
    b = E.build(log, main_tid, cal)
    funcs = E.function_table(b, log, opts.program)
    order = {tid: i for i, tid in enumerate(log.threads)}      # first event first
    threads = sorted(b.threads.values(), key=lambda t: order.get(t.tid, 1 << 30))
    times = [c.start_ns for t in threads for c in t.calls] + \
            [c.end_ns for t in threads for c in t.calls]
    stops = log.summary.get("stops", 0)
    if log.summary.get("errors"):
        notes.append(f"{log.summary['errors']} stops failed in GDB: {log.summary.get('first_error')}")
    if b.unmatched_exits:
        notes.append(f"{b.unmatched_exits} returns without a recorded entry were ignored")
    if log.execed:
        notes.append("the program called exec: tracing stopped at that point")
    if not cal.samples and b.total_calls:
        notes.append("no per-stop calibration sample: durations include the stop cost")
    detached = end.reason == "detached"
    termination = "detached" if detached else "exec" if log.execed else (
        "signal" if end.signal else "exit" if end.reason.startswith("exited") else "unknown")
    meta = {
        "total_calls": b.total_calls, "program": opts.program, "argv": opts.argv,
        "pid": main_tid or 0, "parent_pid": None, "exit_status": None if detached else end.status,
        "termination": termination, "signal": end.signal, "backend": "gdb",
        "start_time": start_time,
        "duration_ns": (max(times) - min(times)) if times else 0,
        "clock": "thread-cpu",
        "timing": _timing(cal),
        "options": {"max_depth": opts.max_depth, "capture_args": opts.capture_args,
                    "pretty": opts.pretty, "capture_returns": opts.capture_returns,
                    "deref": opts.deref, "function": opts.function, "only": opts.only,
                    "exclude": opts.exclude,
                    "uninstrumented": opts.uninstrumented, "mode": cfg["mode"]},
        "thread_count": len(threads), "incomplete_calls": b.incomplete,
        "depth_limited_calls": log.summary.get("depth_limited", 0), "dropped_events": 0,
        "calltrace_version": __version__, "hostname": socket.gethostname(),
        "gdb_stops": stops,
        "calibration_stops": log.summary.get("calibration_stops", 0),
    }
    if notes:
        meta["notes"] = notes
    if opts.output != "/dev/null":
        write_trace(opts.output, meta, funcs, threads, opts.pretty)
    return Result(end.status, meta, funcs, stops, cal.per_stop_ns, wall, notes)


def _timing(cal: E.Calibration) -> str:
    how = (f"measured on the traced thread as the mean of {cal.samples} stop cycles (a "
           f"second breakpoint where the entry's hook returns; standard deviation "
           f"{cal.spread_ns} ns, the noise left in each stop)" if cal.method == "measured"
           else f"estimated as the smallest CPU time per stop between two consecutive events "
                f"of one thread, over {cal.samples} pairs")
    return (f"each thread's CPU time (/proc/PID/task/TID/schedstat, read while the thread "
            f"is stopped, so time stopped in GDB is not counted), minus {cal.per_stop_ns} ns "
            f"per stop for the kernel's trap/step/resume work charged to the thread, {how}. "
            f"Time a thread spends blocked or sleeping is not counted.")
