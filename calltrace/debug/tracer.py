"""`calltrace debug` end to end: choose the breakpoints, drive GDB, build
and write the trace.

MI is used for control only (load, start, arm, continue, wait for the end);
the per-call work happens inside GDB (gdb_scripts/ct_gdb.py), which appends
events to a file this process tails for the progress bar.
"""
from __future__ import annotations

import json
import os
import signal
import socket
import sys
import tempfile
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

from .. import __version__
from ..errors import CalltraceError
from ..runtime import library_path
from ..trace.raw import Module
from ..trace.writer import write_trace
from . import events as E
from . import mi
from .elfinfo import HOOKS, ElfInfo
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
    function: str | None = None
    exclude: str | None = None
    uninstrumented: bool = False
    pretty: bool = False
    progress: bool | None = None     # None: when stderr is a terminal
    quiet: bool = False
    string_cap: int = 256


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
    info = ElfInfo(lib)
    try:
        offs = {HOOKS[f.name]: f.addr for f in info.functions if f.name in HOOKS}
        text = info.elf.get_section_by_name(".text")["sh_addr"]
    finally:
        info.close()
    return {"hook_offsets": offs, "hook_text": text}


def plan(opts: Options, elf: ElfInfo) -> dict:
    """The GDB-side configuration: which breakpoints, where."""
    cfg = {"capture_args": opts.capture_args, "capture_returns": opts.capture_returns,
           "deref": opts.deref, "max_depth": opts.max_depth, "string_cap": opts.string_cap,
           "elf_entry": elf.entry}
    name = opts.argv[0]
    if (opts.capture_args or opts.capture_returns or opts.uninstrumented) and not elf.has_dwarf:
        raise CalltraceError(f"{name} has no debug info: rebuild it with -g")
    if opts.uninstrumented:
        if not opts.function:
            raise CalltraceError("--uninstrumented needs --function REGEX (the functions to trace)")
        funcs = elf.select(opts.function, opts.exclude)
        if not funcs:
            raise CalltraceError(f"no function of {name} matches {opts.function!r}")
        rets = [(s.addr, s.fn, s.kind, f.size) for f in funcs for s in elf.return_sites(f)]
        cfg.update(mode="plain", entries=sorted({f.name for f in funcs}), rets=rets,
                   only=[f.addr for f in funcs])
        return cfg
    if not elf.instrumented:
        raise CalltraceError(f"{name} was not built with -finstrument-functions; rebuild it, or "
                             "trace chosen functions with --uninstrumented --function REGEX")
    if opts.function or opts.exclude:
        funcs = elf.select(opts.function, opts.exclude)
        sites = elf.hook_sites(funcs)
        if not sites:
            raise CalltraceError(f"no instrumented function of {name} matches the selection")
        cfg.update(mode="sites", sites=[(s.addr, s.kind) for s in sites],
                   only=[f.addr for f in funcs])
        return cfg
    if not elf.dynamic:
        raise CalltraceError(f"{name} is statically linked: calltrace debug needs a dynamically "
                             "linked program (or --uninstrumented --function REGEX)")
    lib = os.path.realpath(library_path())
    cfg.update(mode="hooks", hook_lib=lib, **_hook_offsets(lib))
    return cfg


class _Interrupts:
    """First Ctrl-C: SIGINT to the program (its own handling decides).
    Second: the program is killed; the trace so far is still written."""

    def __init__(self):
        self.count = 0
        self.old = None

    def __enter__(self):
        def handler(_sig, _frame):
            self.count += 1
        self.old = {s: signal.signal(s, handler) for s in (signal.SIGINT, signal.SIGTERM)}
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
    elf = ElfInfo(opts.program)
    try:
        cfg = plan(opts, elf)
        span = elf.span
    finally:
        elf.close()
    work = tempfile.mkdtemp(prefix="calltrace-debug-")
    events_path = os.path.join(work, "events")
    cfg_path = os.path.join(work, "config.json")
    cfg.update(events=events_path, program=opts.program,
               args=None, preload=os.environ.get("LD_PRELOAD", ""))
    start_time = datetime.now(timezone.utc).astimezone().isoformat(timespec="milliseconds")
    log = E.EventLog(events_path)
    session = Session()
    t0 = time.monotonic()
    bar = None
    try:
        cfg["args"] = session.program_args(opts.argv[1:])
        Path(cfg_path).write_text(json.dumps(cfg))
        for c in ("-gdb-set pagination off", "-gdb-set confirm off", "-gdb-set width 0",
                  "-gdb-set height 0"):
            session.request(c)
        session.request("-file-exec-and-symbols " + mi.quote(opts.program))
        session.request(mi.console(
            f"python import sys; sys.path.insert(0, {scripts_dir()!r}); import ct_gdb; "
            f"ct_gdb.setup({cfg_path!r})"))
        session.request(mi.console("starti"))
        first = session.wait_stopped()
        end = mi.outcome(first)
        if end is not None:
            raise CalltraceError(f"{opts.argv[0]} ended before it started (status {end.status})")
        session.request(mi.console("python ct_gdb.arm()"))
        bar = _progress(opts)
        with _Interrupts() as intr:
            end, extra_stops = _run(session, log, bar, intr)
        # the recorder writes its summary when GDB sees the exit
        deadline = time.monotonic() + 3
        while not log.summary_written() and time.monotonic() < deadline:
            time.sleep(0.02)
    finally:
        if bar is not None:
            bar.close()
        session.close()
    wall = time.monotonic() - t0
    log.read_new()
    try:
        os.unlink(events_path)
        os.unlink(cfg_path)
        os.rmdir(work)
    except OSError:
        pass
    return _write(opts, cfg, log, end, session.pid, start_time, wall, span)


def _run(session: Session, log: E.EventLog, bar, intr: _Interrupts):
    session.write_async("-exec-continue")
    seen = 0
    extra = 0
    while True:
        if intr.count and session.pid:
            sig = signal.SIGINT if intr.count == 1 and seen != -1 else signal.SIGKILL
            if seen != -1 or intr.count > 1:
                try:
                    os.kill(session.pid, sig)
                except OSError:
                    pass
            intr.count = 0 if sig == signal.SIGINT else intr.count
            seen = -1 if sig == signal.SIGINT else seen
        for rec in session.poll(0.1):
            end = mi.outcome(rec)
            if end is not None:
                return end, extra
            if rec.kind == "notify" and rec.message == "stopped":
                extra += 1                 # a stop the program survives: go on
                session.write_async("-exec-continue")
        if bar is not None:
            n = log.count_new()
            if n:
                bar.update(n)


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


def _write(opts, cfg, log: E.EventLog, end, pid, start_time, wall, span) -> Result:
    bias = log.summary.get("bias", 0)
    _names(log, opts.program, span, bias)
    cal = E.calibrate(log)
    main_tid = log.summary.get("pid") or pid
    b = E.build(log, main_tid, cal)
    funcs = E.function_table(b, log, opts.program)
    threads = sorted(b.threads.values(), key=lambda t: (not t.main, log_order(log, t.tid)))
    times = [c.start_ns for t in threads for c in t.calls] + \
            [c.end_ns for t in threads for c in t.calls]
    stops = log.summary.get("stops", 0)
    notes = []
    if log.summary.get("errors"):
        notes.append(f"{log.summary['errors']} stops failed in GDB: {log.summary.get('first_error')}")
    if b.unmatched_exits:
        notes.append(f"{b.unmatched_exits} returns without a recorded entry were ignored")
    if log.execed:
        notes.append("the program called exec: tracing stopped at that point")
    if not cal.samples and b.total_calls:
        notes.append("no per-stop calibration sample: durations include the stop cost")
    termination = "exec" if log.execed else (
        "signal" if end.signal else "exit" if end.reason.startswith("exited") else "unknown")
    meta = {
        "total_calls": b.total_calls, "program": opts.program, "argv": opts.argv,
        "pid": main_tid or 0, "parent_pid": None, "exit_status": end.status,
        "termination": termination, "signal": end.signal, "backend": "gdb",
        "start_time": start_time,
        "duration_ns": (max(times) - min(times)) if times else 0,
        "clock": "thread-cpu",
        "timing": (f"each thread's CPU time (/proc/PID/task/TID/schedstat, read while the "
                   f"thread is stopped, so time stopped in GDB is not counted), minus "
                   f"{cal.per_stop_ns} ns per stop for the kernel's trap/resume work charged to "
                   f"the thread (calibrated in this run: the smallest CPU time per stop between "
                   f"two consecutive events of one thread, over {cal.samples} samples). Time a "
                   f"thread spends blocked or sleeping is not counted."),
        "options": {"max_depth": opts.max_depth, "capture_args": opts.capture_args,
                    "pretty": opts.pretty, "capture_returns": opts.capture_returns,
                    "deref": opts.deref, "function": opts.function, "exclude": opts.exclude,
                    "uninstrumented": opts.uninstrumented, "mode": cfg["mode"]},
        "thread_count": len(threads), "incomplete_calls": b.incomplete,
        "depth_limited_calls": log.summary.get("depth_limited", 0), "dropped_events": 0,
        "calltrace_version": __version__, "hostname": socket.gethostname(),
        "gdb_stops": stops,
    }
    if notes:
        meta["notes"] = notes
    if opts.output != "/dev/null":
        write_trace(opts.output, meta, funcs, threads, opts.pretty)
    return Result(end.status, meta, funcs, stops, cal.per_stop_ns, wall, notes)


def log_order(log: E.EventLog, tid: int) -> int:
    return list(log.threads).index(tid) if tid in log.threads else 1 << 30
