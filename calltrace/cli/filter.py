"""``calltrace filter`` (internal): write the record-time filter file of a
program. The runtime runs it under a bare LD_PRELOAD, or in an image a traced
program exec'd, with CALLTRACE_FUNCTION, CALLTRACE_ONLY or CALLTRACE_EXCLUDE
set; `calltrace run` writes the file in process."""
from __future__ import annotations

from ..runtime import write_filter
from ..symbols.select import Selection

NAME = "filter"
HELP = "write the record-time filter file for PROGRAM (used by the runtime)"


def add_arguments(p) -> None:
    p.add_argument("program")
    p.add_argument("output")
    p.add_argument("--function", metavar="REGEX")
    p.add_argument("--only", metavar="REGEX")
    p.add_argument("--exclude", metavar="REGEX")


def run(args) -> int:
    write_filter(args.program, Selection(args.function, args.only, args.exclude), args.output)
    return 0
