"""``calltrace run``: run a program with the recorder preloaded, then write the
JSON trace and print a summary on stderr (stdout stays the program's)."""
from __future__ import annotations

import os
import sys
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING

from ..errors import CalltraceError
from ..files import probe_writable
from ..record import live, warm
from ..record.rawdir import RawDir, raw_key, streams, trace_path
from ..runtime import library_path, preload_env, write_filter, write_plan
from ..supervise import Interrupts, Supervisor
from ..symbols.elf import elf_symbols, is_dynamic, is_elf, is_instrumented, is_library
from ..symbols.select import Selection
from ..trace import dataset
from ..units import argparse_duration, argparse_size, plural
from . import options

if TYPE_CHECKING:
    from ..record.convert import Converted

NAME = "run"
HELP = "run a program and record every call it makes"
DESCRIPTION = """\
Run PROGRAM with the calltrace recorder preloaded and write a JSON trace.

  calltrace run ./prog                      # writes calltrace.json
  calltrace run -o t.json ./prog arg1 arg2
  calltrace run -F '^parse_' -N 'parse_ws' ./prog
  calltrace run ./prog --max-depth 5 -- --prog-option

After the program path, only the long options that choose what to record
(--capture-args, --max-depth, --function, --only, --exclude, --threshold) are
calltrace's; any other option there is the program's (calltrace says so on
stderr when it is also one of its own), and so is everything after `--`.
The program's stdin, stdout and stderr are its own; calltrace exits with the
program's exit status (128+N when it was killed by signal N). Build the
program with:
  gcc -g -finstrument-functions -rdynamic prog.c -o prog
"""


def add_arguments(p) -> None:
    options.add_output(p)
    p.add_argument("--max-depth", type=options.positive_int, metavar="N",
                   help="record only calls less than N deep (CALLTRACE_MAX_DEPTH)")
    options.add_format(p)
    p.add_argument("--capture-args", action="store_true", default=None,
                   help="record each call's arguments, typed from DWARF (CALLTRACE_CAPTURE_ARGS=1)")
    options.add_selection(p)
    p.add_argument("-t", "--threshold", metavar="TIME", type=argparse_duration,
                   help="drop calls shorter than TIME (e.g. 10us, 1ms), with what they called")
    p.add_argument("--flush-interval", type=options.positive_int, metavar="N",
                   help="write the trace in parts of about N calls while the program runs "
                        "(CALLTRACE_FLUSH_INTERVAL): OUT.00001.json, OUT.00002.json, ...")
    p.add_argument("--rolling", type=options.positive_int, metavar="K", nargs="?", const=10,
                   help="keep only the newest K parts (default 10; CALLTRACE_OUTPUT_ROLLING=1)")
    p.add_argument("--max-size", type=argparse_size, metavar="SIZE",
                   help="stop recording when the raw data reaches SIZE (e.g. 500M, 2G), counting the calls "
                        "not recorded; with --rolling, SIZE bounds the parts kept (CALLTRACE_MAX_SIZE). "
                        "Recording also stops before the file system has less than 1 GB or 5%% free "
                        "(CALLTRACE_MIN_FREE)")
    p.add_argument("--start-off", action="store_true",
                   help="start with recording off; the toggle signal (SIGUSR1 unless "
                        "--toggle-signal) turns it on (CALLTRACE_START=off)")
    p.add_argument("--toggle-signal", metavar="SIG", type=toggle_signal,
                   help="a signal that turns recording off and on (USR1, USR2, PROF, WINCH, a real-time "
                        "signal number; CALLTRACE_TOGGLE_SIGNAL); none unless given or --start-off")
    p.add_argument("--debug", action="store_true", default=None,
                   help="runtime diagnostics on stderr (CALLTRACE_DEBUG=1)")
    p.add_argument("-q", "--quiet", action="store_true", help="no summary")
    p.add_argument("--top", type=options.positive_int, default=10, metavar="N",
                   help="functions in the summary (default 10)")
    p.add_argument("--force", action="store_true",
                   help="run even if the program does not look instrumented")
    options.add_command(p)


def toggle_signal(text: str) -> str:
    """The signals the runtime takes (runtime/config.c env_signal): checked
    here, so a typo is a usage error and not a run without a toggle."""
    import argparse
    import signal
    if text in ("USR1", "USR2", "PROF", "WINCH", "SIGUSR1", "SIGUSR2", "SIGPROF", "SIGWINCH", "none", "0"):
        return text
    if text.isdigit() and signal.SIGRTMIN <= int(text) <= signal.SIGRTMAX:
        return text
    raise argparse.ArgumentTypeError(f"{text!r} is not USR1, USR2, PROF, WINCH, a real-time signal number "
                                     f"({int(signal.SIGRTMIN)}-{int(signal.SIGRTMAX)}) or none")


def _environment(args, raw_dir: str, program: str) -> dict[str, str]:
    env = preload_env(os.environ, library_path())
    env["CALLTRACE_RAW_DIR"] = raw_dir
    capture = args.capture_args
    if capture is None and os.environ.get("CALLTRACE_CAPTURE_ARGS", "") in ("1", "true", "yes", "on"):
        capture = True
    if capture:
        # Plan here, once, rather than in the runtime at start-up.
        plan = os.path.join(raw_dir, "capture.plan")
        if is_elf(program) and write_plan(program, plan):
            env["CALLTRACE_PLAN"] = plan
        env["CALLTRACE_CAPTURE_ARGS"] = "1"
    if args.max_depth is not None:
        env["CALLTRACE_MAX_DEPTH"] = str(args.max_depth)
    if args.pretty is not None:
        env["CALLTRACE_PRETTY_JSON"] = "1" if args.pretty else "0"
    if args.debug:
        env["CALLTRACE_DEBUG"] = "1"
    if args.threshold is not None:
        env["CALLTRACE_THRESHOLD"] = str(args.threshold)
    if args.start_off:
        env["CALLTRACE_START"] = "off"
    if args.toggle_signal is not None:
        env["CALLTRACE_TOGGLE_SIGNAL"] = args.toggle_signal
    if args.flush_interval is not None:
        env["CALLTRACE_FLUSH_INTERVAL"] = str(args.flush_interval)
    if args.max_size is not None:
        env["CALLTRACE_MAX_SIZE"] = str(args.max_size)
    if args.rolling is not None:
        env["CALLTRACE_OUTPUT_ROLLING"] = "1"
        env["CALLTRACE_ROLLING_KEEP"] = str(args.rolling)
    sel = Selection(args.function, args.only, args.exclude)
    if sel.active:
        for var, regex in (("CALLTRACE_FUNCTION", sel.function), ("CALLTRACE_ONLY", sel.only),
                           ("CALLTRACE_EXCLUDE", sel.exclude)):
            if regex is not None:
                env[var] = regex
        # A script: each instrumented program it starts matches its own functions.
        if is_elf(program):
            path = os.path.join(raw_dir, "record.filter")
            if not write_filter(program, sel, path):
                print(f"calltrace: note: no function of {program} or its libraries matches "
                      f"{sel.describe()}", file=sys.stderr)
            env["CALLTRACE_FILTER"] = path
    if args.output:
        env["CALLTRACE_OUTPUT"] = args.output
    return env


def _check_program(args, path: str) -> None:
    if not is_elf(path):
        print(f"calltrace: note: {args.command[0]} is not an ELF executable; recording the "
              "instrumented programs it starts", file=sys.stderr)
        return
    # The program headers and the dynamic symbol table's hash answer at
    # once; the whole symbol table is read while the program runs (warm.py).
    if not is_dynamic(path):
        if is_library(path):
            raise CalltraceError(f"{args.command[0]} is a shared library, not a program: run the program "
                                 "that loads it")
        raise CalltraceError(f"{args.command[0]} is statically linked: the runtime cannot be preloaded "
                             "into it; link it dynamically (drop -static)")
    if not args.force and not is_instrumented(path):
        elf_symbols(path)   # a damaged file says so
        raise CalltraceError(
            f"{args.command[0]} was not built with -finstrument-functions; rebuild it with "
            "`gcc -g -finstrument-functions -rdynamic ...`, or trace chosen functions of it as it is "
            "with `calltrace debug --uninstrumented --only REGEX` (or pass --force)")


def run(args) -> int:
    program = options.parse_command(args._parser, args)
    path = options.resolve_program(program[0])
    _check_program(args, path)
    output = args.output or os.environ.get("CALLTRACE_OUTPUT") or "calltrace.json"
    if dataset.is_dataset_name(output):
        try:
            os.makedirs(output, exist_ok=True)
        except OSError as e:
            raise CalltraceError(f"cannot create dataset folder {output}: {e.strerror}") from None
    else:
        output = options.output_path(args.output)
    # A dataset's traces go inside its folder; a trace goes beside its name.
    folder = output if dataset.is_dataset_name(output) else os.path.dirname(os.path.abspath(output))
    probe_writable(output, folder)
    raw = RawDir.claim(output)
    sup = Supervisor()
    try:
        pid = sup.start(path, [path, *program[1:]], _environment(args, raw.path, path))
    except OSError as e:
        raw.remove()
        raise CalltraceError(f"cannot run {program[0]}: {e.strerror}", 126) from None
    raw.record(pid, output, program)
    if is_elf(path) and output != "/dev/null":
        warm.start(path, output)
    rolling = _Rolling(raw.path, pid, output, args)
    rolling.start()
    parts = args.rolling is not None or args.flush_interval is not None or "CALLTRACE_FLUSH_INTERVAL" in os.environ
    measure = live.Live(raw.path, pid) if live.useful(output, parts) else None
    if measure:
        measure.start()
    try:
        rc = sup.wait()
    finally:
        rolling.stop()
        opened = measure.stop() if measure else {}
    # Imported once the program has ended (warm.py has most of it loaded by
    # then): neither its start nor our waiting for it depends on them.
    from ..record.collect import Ending, convert_folder
    ending = Ending.from_returncode(rc)
    if output == "/dev/null" or not streams(raw.path) and not rolling.results:
        for stream in opened.values():
            stream.close()
        sup.restore()
        raw.remove()
        if output == "/dev/null":
            return ending.status
        raise CalltraceError("the program ran but nothing was recorded (did the runtime load? "
                             "try --debug)", ending.status or 1)
    results, failed = Interrupts(raw.recovery(), sup.restore).run(lambda: convert_folder(
        raw.path, pid, output, ending, pretty=args.pretty, progress=sys.stderr.isatty(), keep=args.rolling,
        opened=opened))
    results = rolling.results + results
    ok = not failed and rolling.ok
    if failed:
        print("calltrace: error: " + "; ".join(failed), file=sys.stderr)
        print(f"calltrace: the raw data is kept in {raw.path}: {raw.recovery()} converts it "
              "once the cause is fixed", file=sys.stderr)
        raw.release()
    else:
        raw.remove()
    if not args.quiet:
        _summary(results, args.top, sup.abandoned)
    # The program's status wins; a lost trace still must not look like success.
    return ending.status if ok or ending.status else 2


class _Rolling(threading.Thread):
    """With CALLTRACE_FLUSH_INTERVAL / CALLTRACE_OUTPUT_ROLLING the runtime
    starts a new raw part every N calls: convert the finished ones while the
    program runs, so disk use stays bounded."""

    def __init__(self, raw_dir, pid, output, args):
        super().__init__(daemon=True, name="calltrace-rolling")
        self.raw_dir, self.pid, self.output, self.args = raw_dir, pid, output, args
        self.results: list[Converted] = []
        self.ok = True
        self.dropped = 0    # --rolling: parts deleted unconverted, made faster than converted
        self._halt = threading.Event()

    def run(self) -> None:
        while not self._halt.wait(0.25):
            self.convert_finished()

    def convert_finished(self) -> None:
        newest: dict[tuple[int, int], int] = {}
        parts = []
        for raw in Path(self.raw_dir).glob("*.p*.raw"):
            pid, image, part = raw_key(raw)
            if part:
                parts.append((raw, pid, image, part))
                newest[(pid, image)] = max(part, newest.get((pid, image), 0))
        for raw, pid, image, part in sorted(parts, key=lambda x: x[3]):
            # A part is finished once a newer one exists and has been written
            # to for a moment (threads move at their next call).
            if part >= newest[(pid, image)] or time.time() - raw.stat().st_mtime < 0.2:
                continue
            if self.args.rolling and part < newest[(pid, image)] - self.args.rolling:
                raw.unlink()   # would be deleted as older than the newest K anyway
                self.dropped += 1
                continue
            out = trace_path(self.output, self.pid, raw)
            from ..record.convert import convert
            try:
                self.results.append(convert(str(raw), out, pretty=self.args.pretty,
                                            scratch=self.raw_dir))
                raw.unlink()
            except CalltraceError as e:
                self.ok = False
                print(f"calltrace: error: {raw}: {e}", file=sys.stderr)

    def stop(self) -> None:
        self._halt.set()
        if self.is_alive():
            self.join()
        if self.dropped:
            print(f"calltrace: {plural(self.dropped, 'older part')} deleted unconverted: the program made "
                  "parts faster than they could be converted (--rolling keeps the newest)", file=sys.stderr)


def _summary(results: list[Converted], top: int = 10, abandoned=()) -> None:
    from ..analysis.summary import run_lines
    for r in results:
        for line in run_lines(r.metadata, r.functions, r.notes, r.path, top):
            print(line, file=sys.stderr)
        _suggest_parquet(r.path)
    procs = sorted({r.metadata["pid"] for r in results})
    if len(procs) > 1:
        print(f"calltrace: {len(procs)} processes traced: " + ", ".join(
            f"{p} ({', '.join(r.path for r in results if r.metadata['pid'] == p)})" for p in procs),
            file=sys.stderr)
    if abandoned:
        print("calltrace: note: stopped waiting for " + ", ".join(map(str, abandoned)) +
              ": their traces end where they were when converted", file=sys.stderr)


JSON_NOTE_BYTES = 256 << 20


def _suggest_parquet(path: str) -> None:
    """Big JSON is slow to read back and large: say so (JSON stays the default)."""
    if path.endswith((".parquet", ".pq")):
        return
    try:
        size = os.path.getsize(path)
    except OSError:
        return
    if size >= JSON_NOTE_BYTES:
        print(f"calltrace: note: {path} is {size / (1 << 20):,.0f} MB of JSON; "
              f"-o trace.parquet writes the same trace far smaller and faster to read "
              f"(calltrace convert {path} -o trace.parquet converts this one)", file=sys.stderr)
