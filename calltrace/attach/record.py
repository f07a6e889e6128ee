"""`calltrace attach` end to end: check the process, load and arm the
recorder, wait (Ctrl-C, --duration, the program's end), disarm, detach,
convert the raw stream like `calltrace run` does."""
from __future__ import annotations

import os
import shutil
import signal
import sys
import tempfile
import time
from dataclasses import dataclass, field

from ..errors import CalltraceError
from ..runtime import library_path
from ..symbols.select import Selection
from ..record.convert import Converted, convert
from . import target as T
from .inject import Injector


@dataclass
class Options:
    pid: int
    output: str = "calltrace.json"
    duration_ns: int | None = None
    max_depth: int | None = None
    threshold_ns: int | None = None
    function: str | None = None
    only: str | None = None
    exclude: str | None = None
    capture_args: bool = False
    pretty: bool | None = None
    debug: bool = False


@dataclass
class Result:
    converted: Converted | None
    attach_s: float
    detach_s: float
    ended: str                  # "detached", or how the program ended
    status: int | None = None
    notes: list[str] = field(default_factory=list)


class _Stop:
    """Ctrl-C, SIGTERM, SIGHUP: stop recording, detach, write the trace."""

    def __init__(self):
        self.hit = False

    def __enter__(self):
        def handler(sig, _frame):
            self.hit = True
        self.old = {s: signal.signal(s, handler) for s in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)}
        return self

    def __exit__(self, *exc):
        for s, h in self.old.items():
            signal.signal(s, h)


def _config(opts: Options, work: str, exe: str, mods: list[T.Module]) -> str:
    """The session's settings, as the runtime's CALLTRACE_* names."""
    env = {"CALLTRACE_RAW_DIR": work, "CALLTRACE_OUTPUT": os.path.abspath(opts.output),
           "CALLTRACE_TOGGLE_SIGNAL": "none",   # no signal handler installed in the program
           "CALLTRACE_ATTACH_OWNER": str(os.getpid())}
    if opts.max_depth is not None:
        env["CALLTRACE_MAX_DEPTH"] = str(opts.max_depth)
    if opts.threshold_ns is not None:
        env["CALLTRACE_THRESHOLD"] = str(opts.threshold_ns)
    if opts.debug:
        env["CALLTRACE_DEBUG"] = "1"
    if opts.pretty is not None:
        env["CALLTRACE_PRETTY_JSON"] = "1" if opts.pretty else "0"
    libs = [m.path for m in mods if os.path.realpath(m.path) != exe]
    sel = Selection(opts.function, opts.only, opts.exclude)
    if sel.active:
        from .. import bridge
        from ..symbols.select import pick
        chosen = [(path, *pick(path, sel)) for path in [exe, *libs]]
        if not any(inc or exc for _, inc, exc in chosen):
            raise CalltraceError(f"no function of {exe} or of the instrumented libraries it has loaded "
                                 f"matches {sel.describe()}")
        path = os.path.join(work, "record.filter")
        bridge.write_filter(path, sel.mode, chosen)
        for var, value in (("CALLTRACE_FUNCTION", opts.function), ("CALLTRACE_ONLY", opts.only),
                           ("CALLTRACE_EXCLUDE", opts.exclude)):
            if value is not None:
                env[var] = value
        env["CALLTRACE_FILTER"] = path
    if opts.capture_args:
        from ..symbols.plan import program_plan
        plan = os.path.join(work, "capture.plan")
        with open(plan, "wb") as f:
            f.write(program_plan(exe, libs).serialize())
        env["CALLTRACE_CAPTURE_ARGS"] = "1"
        env["CALLTRACE_PLAN"] = plan
    path = os.path.join(work, "attach.cfg")
    with open(path, "w") as f:
        f.write("".join(f"{k}={v}\n" for k, v in env.items()))
    return path


def record(opts: Options, on_recording=None) -> Result:
    exe = T.check_process(opts.pid)
    lib = library_path()
    mods = T.instrumented_modules(opts.pid, exe, lib)
    work = tempfile.mkdtemp(prefix="calltrace-attach-")
    _give(work, opts.pid)
    inj = Injector(opts.pid, lib, work)
    inj.ret = T.entry_point(opts.pid, exe)
    t0 = time.monotonic()
    armed = False
    detach_s = 0.0
    # Ctrl-C from here on only asks to stop: a call into the process must
    # never be abandoned half-way (its thread would run on from our frame).
    with _Stop() as stop:
        try:
            cfg = _config(opts, work, exe, mods)
            inj.start_gdb()
            inj.load(cfg, mods)
            inj.arm(mods)
            armed = True
            inj.resume()
            attach_s = time.monotonic() - t0
            if on_recording is not None and not stop.hit:
                on_recording(attach_s)
            deadline = None if opts.duration_ns is None else time.monotonic() + opts.duration_ns / 1e9
            while not stop.hit and (deadline is None or time.monotonic() < deadline):
                if inj.poll(0.05) is not None:
                    break
            t1 = time.monotonic()
            if inj.exited is None:
                inj.disarm()
            armed = False
            inj.detach()
            detach_s = time.monotonic() - t1
        except BaseException:
            if armed or inj.saved:
                inj.restore_after_error()
            inj.detach()
            _keep_or_remove(work, opts.pid)
            raise
    return _finish(opts, inj, work, attach_s, detach_s)


def _give(work: str, pid: int) -> None:
    """The runtime writes its raw file into `work` as the program's user."""
    st = os.stat(f"/proc/{pid}")
    if os.geteuid() == 0 and (st.st_uid, st.st_gid) != (0, 0):
        os.chown(work, st.st_uid, st.st_gid)


def _keep_or_remove(work: str, pid: int) -> None:
    raw = os.path.join(work, f"{pid}.raw")
    if os.path.exists(raw) and os.path.getsize(raw) > 4096:
        print(f"calltrace: the raw trace is kept in {raw} (calltrace convert {raw})", file=sys.stderr)
        return
    shutil.rmtree(work, ignore_errors=True)


def _finish(opts: Options, inj: Injector, work: str, attach_s: float, detach_s: float) -> Result:
    end = inj.exited
    if end is None:
        status, term, sig, ended = None, "detached", None, "detached"
    else:
        status, sig = end.status, end.signal
        term = "signal" if sig else "exit"
        ended = f"killed by signal {sig}" if sig else f"exited with status {status}"
    notes = list(inj.notes)
    if inj.open_frames:
        notes.append(f"{inj.open_frames} calls were already running when recording began: they are "
                     "marked before_attach and start at the attach time")
    raw = os.path.join(work, f"{opts.pid}.raw")
    converted = None
    if opts.output == "/dev/null":
        shutil.rmtree(work, ignore_errors=True)
    elif not os.path.exists(raw):
        shutil.rmtree(work, ignore_errors=True)
        raise CalltraceError("nothing was recorded (the recorder did not create its file)")
    else:
        extra = {"attach": {"attach_ms": round(attach_s * 1000, 1), "detach_ms": round(detach_s * 1000, 1),
                            "open_at_attach": inj.open_frames}}
        try:
            converted = convert(raw, opts.output, exit_status=status, termination=term, signal=sig,
                                pretty=opts.pretty, notes=notes, extra=extra,
                                options={k: v for k, v in (
                                    ("attach", True), ("function", opts.function), ("only", opts.only),
                                    ("exclude", opts.exclude), ("threshold_ns", opts.threshold_ns))
                                    if v is not None})
        except CalltraceError as e:
            raise CalltraceError(f"{e}; the raw trace is kept in {raw}") from None
        shutil.rmtree(work, ignore_errors=True)
    return Result(converted, attach_s, detach_s, ended, status, notes)
