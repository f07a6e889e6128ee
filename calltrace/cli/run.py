"""``calltrace run``: run a program with the recorder preloaded, then write the
JSON trace and print a summary on stderr (stdout stays the program's)."""
from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from ..analysis.render import top_lines
from ..errors import CalltraceError
from ..files import probe_writable
from ..record.convert import Converted, convert
from ..runtime import library_path, preload_env, write_filter, write_plan
from ..symbols.elf import elf_symbols, is_instrumented
from ..symbols.select import Selection
from ..units import argparse_duration, count, fmt_ns, plural
from . import options

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
    p.add_argument("--start-off", action="store_true",
                   help="start with recording off; SIGUSR1 turns it on (CALLTRACE_START=off)")
    p.add_argument("--debug", action="store_true", default=None,
                   help="runtime diagnostics on stderr (CALLTRACE_DEBUG=1)")
    p.add_argument("-q", "--quiet", action="store_true", help="no summary")
    p.add_argument("--top", type=options.positive_int, default=10, metavar="N",
                   help="functions in the summary (default 10)")
    p.add_argument("--force", action="store_true",
                   help="run even if the program does not look instrumented")
    options.add_command(p)


def _environment(args, raw_dir: str, program: str) -> dict[str, str]:
    env = preload_env(os.environ, library_path())
    env["CALLTRACE_RAW_DIR"] = raw_dir
    capture = args.capture_args
    if capture is None and os.environ.get("CALLTRACE_CAPTURE_ARGS", "") in ("1", "true", "yes", "on"):
        capture = True
    if capture:
        # Plan here, once, rather than in the runtime at start-up.
        plan = os.path.join(raw_dir, "capture.plan")
        if options.is_elf(program) and write_plan(program, plan):
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
    if args.flush_interval is not None:
        env["CALLTRACE_FLUSH_INTERVAL"] = str(args.flush_interval)
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
        if options.is_elf(program):
            path = os.path.join(raw_dir, "record.filter")
            if not write_filter(program, sel, path):
                print(f"calltrace: note: no function of {program} or its libraries matches "
                      f"{sel.describe()}", file=sys.stderr)
            env["CALLTRACE_FILTER"] = path
    if args.output:
        env["CALLTRACE_OUTPUT"] = args.output
    return env


def _check_program(args, path: str) -> None:
    if not options.is_elf(path):
        print(f"calltrace: note: {args.command[0]} is not an ELF executable; recording the "
              "instrumented programs it starts", file=sys.stderr)
        return
    if not elf_symbols(path).dynamic:
        raise CalltraceError(f"{args.command[0]} is statically linked: the runtime cannot be preloaded "
                             "into it; link it dynamically (drop -static)")
    if not args.force and not is_instrumented(path):
        raise CalltraceError(
            f"{args.command[0]} was not built with -finstrument-functions; rebuild it with "
            "`gcc -g -finstrument-functions -rdynamic ...`, or trace chosen functions of it as it is "
            "with `calltrace debug --uninstrumented --only REGEX` (or pass --force)")


def _wait(proc: subprocess.Popen) -> int:
    """Wait like a shell: Ctrl-C and Ctrl-\\ reach the program (same process
    group), not us; SIGTERM/SIGHUP sent to us are passed on to it."""
    def forward(sig, _frame):
        try:
            proc.send_signal(sig)
        except ProcessLookupError:
            pass
    old = {s: signal.signal(s, signal.SIG_IGN) for s in (signal.SIGINT, signal.SIGQUIT)}
    old.update({s: signal.signal(s, forward)
                for s in (signal.SIGTERM, signal.SIGHUP, signal.SIGUSR1, signal.SIGUSR2)})
    try:
        return proc.wait()
    finally:
        for s, h in old.items():
            signal.signal(s, h)


def _child_output(output: str, pid: int) -> str:
    p = Path(output)
    return str(p.with_name(f"{p.stem}.{pid}{p.suffix}")) if p.suffix else f"{output}.{pid}"


def run(args) -> int:
    program = options.parse_command(args._parser, args)
    path = options.resolve_program(program[0])
    _check_program(args, path)
    output = options.output_path(args.output)
    probe_writable(output, os.path.dirname(os.path.abspath(output)))
    raw_dir = tempfile.mkdtemp(prefix="calltrace-")
    try:
        proc = subprocess.Popen([path, *program[1:]], executable=path,
                                env=_environment(args, raw_dir, path))
    except OSError as e:
        shutil.rmtree(raw_dir, ignore_errors=True)
        raise CalltraceError(f"cannot run {program[0]}: {e.strerror}", 126) from None
    rolling = _Rolling(raw_dir, proc.pid, output, args)
    rolling.start()
    try:
        rc = _wait(proc)
    finally:
        rolling.stop()
    status, term, sig = (128 - rc, "signal", -rc) if rc < 0 else (rc, "exit", None)
    results, ok = _convert_all(raw_dir, proc.pid, output, status, term, sig, args)
    results = rolling.results + results
    ok = ok and rolling.ok
    if not options.is_elf(path):
        results = _adopt_only_trace(results, output)
    if not args.quiet:
        _summary(results, output, args.top)
    # The program's status wins; a lost trace still must not look like success.
    return status if ok or status else 2


def _adopt_only_trace(results: list[Converted], output: str) -> list[Converted]:
    """A script (`calltrace run -o t.json ./run.sh`) runs no instrumented
    code itself: when it started exactly one traced program, that trace is
    the one written to the -o name."""
    target = os.path.abspath(output)
    mine = [r for r in results if os.path.abspath(r.path) == target]
    others = [r for r in results if os.path.abspath(r.path) != target]
    if len(mine) != 1 or mine[0].metadata["total_calls"] or len(others) != 1 or "part" in others[0].metadata:
        return results
    os.replace(others[0].path, target)
    others[0].path = output
    return others


RAW_NAME = re.compile(r"^(\d+)(?:-(\d+))?(?:\.p(\d+))?$")


def _raw_key(raw: Path) -> tuple[int, int, int]:
    """(pid, image after exec, part) from "<pid>[-<n>][.p<part>].raw"."""
    m = RAW_NAME.match(raw.stem)
    return (int(m.group(1)), int(m.group(2) or 0), int(m.group(3) or 0)) if m else (0, 0, 0)


class _Rolling(threading.Thread):
    """With CALLTRACE_FLUSH_INTERVAL / CALLTRACE_OUTPUT_ROLLING the runtime
    starts a new raw part every N calls: convert the finished ones while the
    program runs, so disk use stays bounded."""

    def __init__(self, raw_dir, pid, output, args):
        super().__init__(daemon=True, name="calltrace-rolling")
        self.raw_dir, self.pid, self.output, self.args = raw_dir, pid, output, args
        self.results: list[Converted] = []
        self.ok = True
        self._halt = threading.Event()

    def run(self) -> None:
        while not self._halt.wait(0.25):
            self.convert_finished()

    def convert_finished(self) -> None:
        newest: dict[tuple[int, int], int] = {}
        parts = []
        for raw in Path(self.raw_dir).glob("*.p*.raw"):
            pid, image, part = _raw_key(raw)
            if part:
                parts.append((raw, pid, image, part))
                newest[(pid, image)] = max(part, newest.get((pid, image), 0))
        for raw, pid, image, part in sorted(parts, key=lambda x: x[3]):
            # A part is finished once a newer one exists and has been written
            # to for a moment (threads move at their next call).
            if part >= newest[(pid, image)] or time.time() - raw.stat().st_mtime < 0.2:
                continue
            out = self.output if pid == self.pid and not image else _child_output(self.output, raw.stem)
            try:
                self.results.append(convert(str(raw), out, pretty=self.args.pretty))
                raw.unlink()
            except CalltraceError as e:
                self.ok = False
                print(f"calltrace: error: {raw}: {e}", file=sys.stderr)

    def stop(self) -> None:
        self._halt.set()
        if self.is_alive():
            self.join()


def _convert_all(raw_dir, pid, output, status, term, sig, args) -> tuple[list[Converted], bool]:
    raws = sorted(Path(raw_dir).glob("*.raw"), key=_raw_key)
    if output == "/dev/null":
        shutil.rmtree(raw_dir, ignore_errors=True)
        return [], True
    if not raws:
        shutil.rmtree(raw_dir, ignore_errors=True)
        raise CalltraceError("the program ran but nothing was recorded (did the runtime load? "
                             "try --debug)", status or 1)
    results, failed = [], []
    last_part, last_image = {}, {}
    for raw in raws:
        rpid, image, part = _raw_key(raw)
        last_part[(rpid, image)] = max(part, last_part.get((rpid, image), 0))
        last_image[rpid] = max(image, last_image.get(rpid, 0))
    for raw in raws:
        rpid, image, part = _raw_key(raw)
        # The status we saw belongs to the program's last image (after any
        # exec) and its last part; earlier ones say how they ended themselves.
        main = rpid == pid and image == last_image[rpid] and part == last_part[(rpid, image)]
        out = output if rpid == pid and not image else _child_output(output, raw.stem.split(".p")[0])
        try:
            result = convert(str(raw), out, exit_status=status if main else None,
                             termination=term if main else None,
                             signal=sig if main else None, pretty=args.pretty,
                             progress=sys.stderr.isatty())
            raw.unlink()
            if rpid != pid and not result.metadata["total_calls"]:
                os.unlink(result.path)   # a process that ran no instrumented code (a shell)
            else:
                results.append(result)
        except CalltraceError as e:
            failed.append(f"{raw}: {e}")
    if failed:
        print("calltrace: error: " + "; ".join(failed), file=sys.stderr)
        print(f"calltrace: raw streams kept in {raw_dir} (calltrace convert FILE)", file=sys.stderr)
    else:
        shutil.rmtree(raw_dir, ignore_errors=True)
    return results, not failed


def _summary(results: list[Converted], output: str, top: int = 10) -> None:
    err = sys.stderr
    for r in results:
        m = r.metadata
        extra = []
        if m["incomplete_calls"]:
            extra.append(f"{count(m['incomplete_calls'])} still open at the end")
        if m["depth_limited_calls"]:
            extra.append(f"{count(m['depth_limited_calls'])} below --max-depth not recorded")
        if m.get("filtered_calls"):
            extra.append(f"{count(m['filtered_calls'])} shorter than --threshold dropped")
        if m["dropped_events"]:
            extra.append(f"{count(m['dropped_events'])} events dropped")
        end = (f"killed by signal {m['signal']}" if m["termination"] == "signal"
               else f"exit status {m['exit_status']}")
        print(f"calltrace: {plural(m['total_calls'], 'call')}, {plural(m['thread_count'], 'thread')}, "
              f"{fmt_ns(m['duration_ns'])}, pid {m['pid']}, "
              f"{end}" + (f" ({'; '.join(extra)})" if extra else ""), file=err)
        for line in top_lines(r.functions, top):
            print(line, file=err)
        for note in r.notes:
            print(f"calltrace: note: {note}", file=err)
        print(f"calltrace: trace written to {r.path}", file=err)
