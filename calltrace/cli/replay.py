"""``calltrace replay``: the call tree as an indented timeline."""
from __future__ import annotations

import sys

from ..trace.parts import load_any
from ..analysis.paths import Filter, pick_threads, select
from ..analysis.progress import reading, warn
from ..analysis.render import Colour, fmt_call, use_colour
from ..symbols.select import compile_regex
from ..units import argparse_duration, fmt_ns
from ..errors import CalltraceError

NAME = "replay"
HELP = "show the calls as an indented timeline, thread by thread"
DESCRIPTION = """Show every call of a trace as an indented timeline: start time (since
the trace began), duration, and the call, indented by depth, with captured
arguments and return values. Threads are shown one after the other.

examples:
  calltrace replay trace.json
  calltrace replay -F '^parse' -D 2 trace.json     only parse* subtrees, 2 levels
  calltrace replay -t 10us -N 'log_' trace.json    hide short calls and log_* subtrees"""


def add_arguments(p) -> None:
    p.add_argument("trace", nargs="+", help="a trace file (calltrace.json), or the parts of "
                   "one rolling run (trace.00001.json trace.00002.json ...)")
    p.add_argument("-F", "--function", metavar="REGEX",
                   help="show only the subtrees of calls whose name matches")
    p.add_argument("-N", "--exclude", metavar="REGEX",
                   help="hide calls whose name matches, with everything they call")
    p.add_argument("-D", "--depth", metavar="N", type=int,
                   help="show N levels (counted from the -F match when given)")
    p.add_argument("-t", "--threshold", metavar="TIME", type=argparse_duration, default=0,
                   help="hide calls shorter than TIME (e.g. 10us, 2ms) and what they call")
    p.add_argument("--tid", metavar="N", type=int, action="append",
                   help="show only thread N (repeatable)")
    p.add_argument("--color", "--colour", choices=("auto", "always", "never"), default="auto",
                   help="colour output (default: only on a terminal)")


def run(args) -> int:
    if args.depth is not None and args.depth < 1:
        raise CalltraceError("-D/--depth must be at least 1")
    flt = Filter(*(compile_regex(r, o) if r is not None else None for r, o in ((args.function, "-F"), (args.exclude, "-N"))),
                 args.depth, args.threshold)
    trace = load_any(args.trace)
    warn(trace)
    threads = pick_threads(trace, args.tid)
    col = Colour(use_colour(args.color))
    out = sys.stdout
    first = True
    with reading(trace):
        for t in threads:
            if not first:
                out.write("\n")
            first = False
            label = f"thread {t.tid}" + (" [main]" if t.main else "") + (f" {t.name}" if t.name else "")
            out.write(f"{col.bold}== {label} =={col.reset}\n")
            buf: list[str] = []
            shown = 0
            for (fn, _, start, dur, extra), depth in select(t.rows(), flt):
                text = fmt_call(fn, extra)
                buf.append(f"{fmt_ns(start):>11}  {col.duration(dur, f'{fmt_ns(dur):>11}')}  "
                           f"{'  ' * depth}{col.cyan if depth == 0 else ''}{text}"
                           f"{col.reset if depth == 0 else ''}\n")
                shown += 1
                if len(buf) >= 4096:
                    out.write("".join(buf))
                    buf.clear()
            out.write("".join(buf))
            if not shown:
                out.write("  (no calls shown)\n")
    return 0
