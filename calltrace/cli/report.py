"""``calltrace report``: per-function statistics."""
from __future__ import annotations

import sys

from ..trace.parts import load_any
from ..analysis.progress import reading, warn
from ..analysis.render import fmt_call, table
from ..analysis.paths import pick_threads
from ..analysis.stats import COLUMNS, average, slowest, sort_stats, thread_stats
from ..units import fmt_ns, plural
from ..errors import CalltraceError

NAME = "report"
HELP = "per-function table: calls, total, self, average, min, max"
DESCRIPTION = """Per-function statistics of a trace: number of calls, total (inclusive)
time, self (exclusive) time, average, shortest and longest call. A
recursive function's inner calls are not counted twice in its total.

examples:
  calltrace report trace.json                   hottest (self time) first
  calltrace report --sort calls -n 10 trace.json
  calltrace report --threads trace.json         one table per thread
  calltrace report --slowest 5 trace.json       the 5 longest calls and their callers"""


def add_arguments(p) -> None:
    p.add_argument("trace", nargs="+", help="a trace file (calltrace.json), or the parts of "
                   "one rolling run (trace.00001.json trace.00002.json ...)")
    p.add_argument("-s", "--sort", default="self", choices=list(COLUMNS),
                   help="column to sort by (default: self; numbers largest first)")
    p.add_argument("-n", "--limit", metavar="N", type=int, help="show only the first N functions")
    p.add_argument("--threads", action="store_true", help="a table for each thread")
    p.add_argument("--tid", metavar="N", type=int, action="append",
                   help="with --threads: only thread N (repeatable)")
    p.add_argument("--slowest", metavar="N", type=int,
                   help="list the N longest single calls with their call paths")


HEADER = ("calls", "total", "self", "average", "min", "max", "function")


def rows(stats) -> list[tuple[str, ...]]:
    return [(str(s.calls), fmt_ns(s.total_ns), fmt_ns(s.self_ns), fmt_ns(average(s)),
             fmt_ns(s.min_ns), fmt_ns(s.max_ns), s.function) for s in stats]


def _table(stats, args) -> list[str]:
    stats = sort_stats(stats, args.sort)
    if args.limit is not None:
        stats = stats[:args.limit]
    return table(HEADER, rows(stats))


def run(args) -> int:
    if args.limit is not None and args.limit < 0:
        raise CalltraceError("-n/--limit must not be negative")
    if args.slowest is not None and args.slowest < 1:
        raise CalltraceError("--slowest must be at least 1")
    if args.tid and not args.threads:
        raise CalltraceError("--tid needs --threads")
    trace = load_any(args.trace)
    warn(trace)
    out: list[str] = []
    md = trace.metadata
    out.append(f"{md.get('program', '?')}: {plural(md['total_calls'], 'call')}, "
               f"{plural(len(trace.functions), 'function')}, "
               f"{plural(md.get('thread_count', len(trace.threads)), 'thread')}, "
               f"{fmt_ns(md.get('duration_ns') or 0)}")
    passes = int(bool(args.threads)) + int(args.slowest is not None)
    with reading(trace, passes=max(1, passes)):
        if args.threads:
            for t in pick_threads(trace, args.tid):
                label = f"thread {t.tid}" + (" [main]" if t.main else "") + (f" {t.name}" if t.name else "")
                out.append("")
                out.append(f"== {label} ==")
                out.extend(_table(thread_stats(t), args))
        elif args.slowest is None:
            out.append("")
            out.extend(_table(trace.functions, args))
        if args.slowest is not None:
            body = [(fmt_ns(s.duration_ns), str(s.tid), fmt_ns(s.start_ns),
                     " > ".join(s.path[:-1] + (fmt_call(s.path[-1], s.extra),)))
                    for s in slowest(trace, args.slowest)]
            # As many as there are: --slowest 1000000 on a small trace lists all.
            out.extend(["", f"slowest {len(body)} calls:"])
            out.extend(table(("duration", "tid", "start", "call path"), body))
    sys.stdout.write("\n".join(out) + "\n")
    return 0
