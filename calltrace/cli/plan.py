"""``calltrace plan`` (internal): write the argument-capture plan of a
program and of the instrumented shared libraries it loads.

The runtime runs it at start-up under a bare LD_PRELOAD with
CALLTRACE_CAPTURE_ARGS=1; `calltrace run --capture-args` plans in process."""
from __future__ import annotations

import os

from ..errors import CalltraceError
from ..runtime import write_plan

NAME = "plan"
HELP = "write the argument-capture plan of PROGRAM (used by the runtime)"


def add_arguments(p) -> None:
    p.add_argument("program", help="ELF executable built with -g")
    p.add_argument("-o", "--output", required=True, metavar="PATH", help="plan file to write")
    p.add_argument("--library", action="store_true",
                   help="plan PROGRAM, a shared library the program dlopen'ed, alone")


def run(args) -> int:
    if not os.path.isfile(args.program):
        raise CalltraceError(f"{args.program}: no such file")
    write_plan(args.program, args.output, args.library)
    return 0
