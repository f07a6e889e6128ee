"""Per-function statistics and the slowest calls.

The trace's own ``functions`` table already holds calls/total/self/min/max
for the whole trace, so the plain report reads no calls at all; per-thread
tables and the slowest calls need a walk over the calls."""
from __future__ import annotations

from typing import Iterable, NamedTuple

from ..errors import CalltraceError
from ..trace.model import FunctionStats, Thread, Trace

# column name -> (sort key, largest first)
COLUMNS = {
    "function": (lambda s: s.function, False),
    "calls": (lambda s: s.calls, True),
    "total": (lambda s: s.total_ns, True),
    "self": (lambda s: s.self_ns, True),
    "average": (lambda s: average(s), True),
    "min": (lambda s: s.min_ns, True),
    "max": (lambda s: s.max_ns, True),
}


def average(s: FunctionStats) -> int:
    return s.total_ns // s.calls if s.calls else 0


def sort_stats(stats: Iterable[FunctionStats], column: str) -> list[FunctionStats]:
    if column not in COLUMNS:
        raise CalltraceError(f"cannot sort on {column!r}: use one of {', '.join(COLUMNS)}")
    key, reverse = COLUMNS[column]
    # Ties broken by name so the order never depends on the file's order.
    out = sorted(stats, key=lambda s: s.function)
    return sorted(out, key=key, reverse=reverse)


def thread_stats(thread: Thread) -> list[FunctionStats]:
    """The functions table of one thread, computed from its calls by the
    native kernel (the converter's rules: see runtime/kernels.c), or read
    from a Parquet footer's index, which that kernel made."""
    table = getattr(thread.calls, "table", None)
    if table is None:
        from ..trace.colsource import Names, columns
        from ..trace.kernels import thread_stats as kernel
        names = Names()
        table = kernel(columns(thread, names, lean=True), names)
    stats = [FunctionStats(fn, *v) for fn, v in table.items()]
    return sorted(stats, key=lambda s: (-s.self_ns, s.function))


class SlowCall(NamedTuple):
    duration_ns: int
    start_ns: int
    tid: int
    path: tuple[str, ...]   # outermost caller first, the call itself last
    extra: dict | None      # incomplete, args, ... as in the file


def slowest(trace: Trace, n: int) -> list[SlowCall]:
    """The ``n`` longest single calls, longest first (ties: earlier first),
    with their call paths. Keeps only ``n`` calls in memory whatever the
    trace's size."""
    # No more than the trace holds: the kernel allocates room for n at once.
    n = min(n, trace.total_calls)
    if n <= 0:
        return []
    from ..trace.colsource import Names, columns
    from ..trace.kernels import Slowest, ranked_calls
    threads = list(trace.threads)
    index = trace.index
    if index is not None and n <= index.limit:
        found = ranked_calls(index.slowest[:n], index.names, index.extras)
        return [SlowCall(dur, start, threads[t].tid, path, extra) for dur, start, t, path, extra in found]
    # A columnar file reads a winner's optional columns at the end, by row.
    lookup = [getattr(t.calls, "extras", None) for t in threads]
    names = Names(f.function for f in trace.functions)
    top = Slowest(n)
    try:
        for i, t in enumerate(threads):
            top.feed(i, columns(t, names, lean=lookup[i] is not None), extras=lookup[i] is None)
        found = top.result(names, lambda i, rows: lookup[i](rows))
    finally:
        top.close()
    return [SlowCall(dur, start, threads[t].tid, path, extra) for dur, start, t, path, extra in found]
