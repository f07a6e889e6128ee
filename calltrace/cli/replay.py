"""``calltrace replay``: the call tree as an indented timeline."""
from __future__ import annotations

import sys

from ..trace.parts import load_any
from ..analysis.paths import Filter, pick_threads
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
    add_filters(p)
    p.add_argument("--color", "--colour", choices=("auto", "always", "never"), default="auto",
                   help="colour output (default: only on a terminal)")


def add_filters(p) -> None:
    """-F/-N/-D/-t/--tid, shared by replay and export."""
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


def make_filter(args) -> Filter:
    if args.depth is not None and args.depth < 1:
        raise CalltraceError("-D/--depth must be at least 1")
    return Filter(*(compile_regex(r, o) if r is not None else None
                    for r, o in ((args.function, "-F"), (args.exclude, "-N"))), args.depth, args.threshold)


def run(args) -> int:
    flt = make_filter(args)
    trace = load_any(args.trace)
    warn(trace)
    threads = pick_threads(trace, args.tid)
    col = Colour(use_colour(args.color))
    out = sys.stdout
    from ..trace.colsource import Names, columns
    from ..trace.kernels import Formatter
    names = Names(f.function for f in trace.functions)
    fmt = Formatter(Formatter.REPLAY, names, flt, col.on)
    first = True
    with reading(trace):
        for t in threads:
            label = f"thread {t.tid}" + (" [main]" if t.main else "") + (f" {t.name}" if t.name else "")
            out.write(("" if first else "\n") + f"{col.bold}== {label} =={col.reset}\n")
            fresh = first
            first = False
            fmt.reset()
            before = fmt.shown
            for piece in fmt.run(columns(t, names)):
                if isinstance(piece, tuple):
                    c, i, depth = piece
                    piece = _line(col, names.names[c.func[i]], int(c.start[i]), int(c.dur[i]), depth,
                                  c.extra(i)).encode("utf-8", "backslashreplace")
                out.flush()
                out.buffer.write(piece)
                if fresh:   # the first lines go out at once, whatever follows
                    out.buffer.flush()
                    fresh = False
            if fmt.shown == before:
                out.write("  (no calls shown)\n")
    return 0


def _line(col: Colour, fn: str, start: int, dur: int, depth: int, extra: dict) -> str:
    """One call with captured values (the kernel prints the others the same way)."""
    return (f"{fmt_ns(start):>11}  {col.duration(dur, f'{fmt_ns(dur):>11}')}  "
            f"{'  ' * depth}{col.cyan if depth == 0 else ''}{fmt_call(fn, extra)}"
            f"{col.reset if depth == 0 else ''}\n")
