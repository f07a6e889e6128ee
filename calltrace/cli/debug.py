"""``calltrace debug``: the slow, detailed backend (GDB): typed arguments and
return values from DWARF, programs built without instrumentation."""
from __future__ import annotations

import sys

from ..debug.tracer import Options, trace
from ..errors import CalltraceError
from ..analysis.summary import debug_lines
from ..symbols.elf import is_elf
from . import options

NAME = "debug"
HELP = "trace a program under GDB, with typed arguments and return values"
DESCRIPTION = """\
Trace PROGRAM under GDB and write a JSON trace (the same format as `run`).

  calltrace debug ./prog --capture-args
  calltrace debug --capture-args --capture-returns -o t.json ./prog -- -v
  calltrace debug ./prog --function '^parse_' --exclude 'parse_ws'
  calltrace debug --uninstrumented ./plain --only 'fib|square'
  calltrace debug --pid 4242 -F '^parse_' --capture-args   # a running process

Slower than `run` (~100-200 us per call, GDB stops) but reads arguments and
return values as GDB sees them from DWARF. -F/--only/-N select functions as
in `run`; --only puts breakpoints only in the selected functions (the fastest).
--uninstrumented traces a program built with -g but without
-finstrument-functions. After the program path, only the long options that
choose what to record (--capture-args, --capture-returns, --deref,
--max-depth, --function, --only, --exclude) are calltrace's; any other option
there is the program's (calltrace says so on stderr when it is also one of
its own), and so is everything after `--`.
Durations are the thread's CPU time minus the cost of the stops (see
metadata.timing). Ctrl-C: the program gets SIGINT; twice: it is killed.
The trace collected so far is written in every case.
"""


def add_arguments(p) -> None:
    options.add_output(p)
    p.add_argument("--capture-args", action="store_true", default=None,
                   help="record each call's arguments, typed from DWARF")
    p.add_argument("--capture-returns", action="store_true", default=None,
                   help="record each call's return value")
    p.add_argument("--deref", action="store_true", default=None,
                   help="with --capture-args: also the struct a pointer argument points to")
    p.add_argument("--max-depth", type=options.positive_int, metavar="N",
                   help="record only calls less than N deep")
    options.add_selection(p)
    p.add_argument("--uninstrumented", action="store_true", default=None,
                   help="the program was built without -finstrument-functions: breakpoints on the "
                        "entries and returns of the --only functions (with -F: of every function "
                        "with debug info)")
    p.add_argument("--string-cap", type=options.positive_int, default=None, metavar="BYTES",
                   help="bytes of a string argument to copy (default 256)")
    options.add_format(p)
    g = p.add_mutually_exclusive_group()
    g.add_argument("--progress", dest="progress", action="store_true", default=None,
                   help="progress bar on stderr (default: when stderr is a terminal)")
    g.add_argument("--no-progress", dest="progress", action="store_false")
    p.add_argument("-q", "--quiet", action="store_true", default=None,
                   help="no progress bar, no summary")
    p.add_argument("--pid", type=options.pid, metavar="PID",
                   help="attach to this running process instead of starting one; Ctrl-C detaches "
                        "(the process goes on)")
    options.add_command(p)


def _attached(args) -> tuple[str, list[str]]:
    """--pid: the process's program and command line, after the checks."""
    from ..attach.target import check_process
    if args.command and args.command != ["--"]:
        raise CalltraceError("give either --pid PID or a program to run, not both")
    path = check_process(args.pid)
    try:
        with open(f"/proc/{args.pid}/cmdline", "rb") as f:
            argv = [a.decode(errors="replace") for a in f.read().split(b"\0")[:-1]]
    except OSError:
        argv = [path]
    return path, argv or [path]


def run(args) -> int:
    if args.pid is not None:
        path, program = _attached(args)
    else:
        program = options.parse_command(args._parser, args)
        path = options.resolve_program(program[0])
    if not is_elf(path):
        raise CalltraceError(f"{program[0]} is not an ELF executable")
    output = options.output_path(args.output)
    if args.deref and not args.capture_args:
        raise CalltraceError("--deref needs --capture-args")
    opts = Options(program=path, argv=[program[0], *program[1:]], output=output,
                   capture_args=bool(args.capture_args),
                   capture_returns=bool(args.capture_returns), deref=bool(args.deref),
                   max_depth=args.max_depth, function=args.function, only=args.only,
                   exclude=args.exclude,
                   uninstrumented=bool(args.uninstrumented), pretty=bool(args.pretty),
                   progress=args.progress, quiet=bool(args.quiet),
                   string_cap=args.string_cap or 256, pid=args.pid)
    res = trace(opts)
    if not opts.quiet:
        summary(res, output)
    return res.status


def summary(res, output: str) -> None:
    for line in debug_lines(res, output):
        print(line, file=sys.stderr)
