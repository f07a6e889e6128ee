"""``calltrace plan``: write the argument-capture plan of a program and of
the instrumented shared libraries it loads.

The runtime runs it at start-up under a bare LD_PRELOAD with
CALLTRACE_CAPTURE_ARGS=1; `calltrace run --capture-args` plans in process."""
from __future__ import annotations

import os

from ..errors import CalltraceError
from ..symbols.plan import program_plan

NAME = "plan"
ORDER = 95
HELP = "write the argument-capture plan of PROGRAM (used by the runtime)"


def add_arguments(p) -> None:
    p.add_argument("program", help="ELF executable built with -g")
    p.add_argument("-o", "--output", required=True, metavar="PATH", help="plan file to write")


def write_plan(program: str, output: str) -> int:
    """Write the plan; returns the number of functions it covers."""
    plan = program_plan(os.path.realpath(program))
    try:
        with open(output, "wb") as f:
            f.write(plan.serialize())
    except OSError as e:
        raise CalltraceError(f"cannot write {output}: {e.strerror}") from None
    return len(plan.ordered())


def run(args) -> int:
    if not os.path.isfile(args.program):
        raise CalltraceError(f"{args.program}: no such file")
    write_plan(args.program, args.output)
    return 0
