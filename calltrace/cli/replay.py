"""``calltrace replay``: the call tree as an indented timeline."""
from __future__ import annotations

import sys

from ..trace.parts import load_any
from ..analysis.paths import pick_threads
from ..analysis.progress import reading, warn
from .options import add_filters, make_filter
from ..analysis.render import Colour, fmt_call, use_colour
from ..units import fmt_ns

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
