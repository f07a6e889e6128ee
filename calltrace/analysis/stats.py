"""Per-function statistics and the slowest calls.

The trace's own ``functions`` table already holds calls/total/self/min/max
for the whole trace, so the plain report reads no calls at all; per-thread
tables and the slowest calls need a walk over the calls."""
from __future__ import annotations

import heapq
from typing import Iterable, NamedTuple

from ..errors import CalltraceError
from ..trace.model import FunctionStats, Thread, Trace
from .paths import with_paths

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
    """The functions table of one thread, computed from its calls (the same
    rules as the converter: see closed_calls; inlined here for speed)."""
    table: dict[str, list[int]] = {}   # function -> [calls, total, self, min, max]
    active: dict[str, int] = {}
    stack: list[list] = []             # [function, duration, child_ns]

    def close() -> None:
        fn, dur, child = stack.pop()
        n = active[fn] - 1
        active[fn] = n
        s = table.get(fn)
        if s is None:
            s = table[fn] = [0, 0, 0, dur, dur]
        s[0] += 1
        if n == 0:
            s[1] += dur
        s[2] += dur - child if dur > child else 0
        if dur < s[3]:
            s[3] = dur
        elif dur > s[4]:
            s[4] = dur

    for fn, depth, _, dur, _ in thread.rows():
        while len(stack) > depth:
            close()
        if stack:
            stack[-1][2] += dur
        stack.append([fn, dur, 0])
        active[fn] = active.get(fn, 0) + 1
    while stack:
        close()
    stats = [FunctionStats(fn, *v) for fn, v in table.items()]
    return sorted(stats, key=lambda s: (-s.self_ns, s.function))


class SlowCall(NamedTuple):
    duration_ns: int
    start_ns: int
    tid: int
    path: tuple[str, ...]   # outermost caller first, the call itself last
    extra: dict | None      # incomplete, args, ... as in the file


def slowest(trace: Trace, n: int) -> list[SlowCall]:
    """The ``n`` longest single calls, longest first, with their call paths.
    Keeps only ``n`` calls in memory whatever the trace's size."""
    if n <= 0:
        return []
    heap: list[tuple] = []
    seq = 0  # tie-break: earlier calls win, and tuples never compare paths
    for t in trace.threads:
        for row, callers in with_paths(t.rows()):
            dur = row[3]
            seq += 1
            if len(heap) < n:
                heapq.heappush(heap, (dur, -seq, row, t.tid, tuple(callers)))
            elif dur > heap[0][0]:
                heapq.heapreplace(heap, (dur, -seq, row, t.tid, tuple(callers)))
    out = []
    for dur, _, row, tid, callers in sorted(heap, reverse=True):
        out.append(SlowCall(dur, row[2], tid, callers + (row[0],), row[4]))
    return out
