"""Walking a thread's flat call list with its stack of open calls: the one
place that turns depth-ordered rows into parents, paths and self times."""
from __future__ import annotations

import re
from typing import Iterable, Iterator, NamedTuple

from ..errors import CalltraceError


class Closed(NamedTuple):
    """A call whose children have all been seen."""
    function: str
    depth: int
    start_ns: int
    duration_ns: int
    self_ns: int
    outermost: bool  # no call of the same function is open around it


def closed_calls(rows: Iterable[tuple]) -> Iterator[Closed]:
    """Every call once its subtree is complete (children before parents)."""
    stack: list[list] = []  # [function, depth, start, duration, child_ns]
    active: dict[str, int] = {}
    for fn, depth, start, dur, _ in rows:
        while len(stack) > depth:
            yield _close(stack, active)
        if stack:
            stack[-1][4] += dur
        stack.append([fn, depth, start, dur, 0])
        active[fn] = active.get(fn, 0) + 1
    while stack:
        yield _close(stack, active)


def _close(stack: list, active: dict) -> Closed:
    fn, depth, start, dur, child = stack.pop()
    n = active[fn] - 1
    active[fn] = n
    return Closed(fn, depth, start, dur, max(0, dur - child), n == 0)


def with_paths(rows: Iterable[tuple]) -> Iterator[tuple[tuple, list[str]]]:
    """Each row with the names of the calls open around it (its callers,
    outermost first). The list is reused: copy it to keep it."""
    stack: list[str] = []
    for row in rows:
        del stack[row[1]:]
        yield row, stack
        stack.append(row[0])


class Filter(NamedTuple):
    function: re.Pattern | None = None   # show only subtrees rooted at a match
    exclude: re.Pattern | None = None    # hide matches and their subtrees
    max_depth: int | None = None         # levels shown (under a -F root: from it)
    min_ns: int = 0                      # hide shorter calls (and their subtrees)


def select(rows: Iterable[tuple], f: Filter) -> Iterator[tuple[tuple, int]]:
    """Rows that pass the filter, each with the depth to show it at."""
    skip = None   # depth of a hidden call whose subtree is being skipped
    root = None   # depth of the current -F subtree root
    want, exclude, max_depth, min_ns = f.function, f.exclude, f.max_depth, f.min_ns
    for row in rows:
        depth = row[1]
        if skip is not None:
            if depth > skip:
                continue
            skip = None
        if want is not None:
            if root is not None and depth <= root:
                root = None
            if root is None:
                if not want.search(row[0]):
                    continue
                root = depth
            shown = depth - root
        else:
            shown = depth
        if (row[3] < min_ns or (exclude is not None and exclude.search(row[0]))
                or (max_depth is not None and shown >= max_depth)):
            skip = depth
            if root == depth:
                root = None
            continue
        yield row, shown


def pick_threads(trace, tids):
    """The threads --tid names (all without it); a tid not in the trace is an error."""
    if not tids:
        return list(trace.threads)
    have = {t.tid for t in trace.threads}
    missing = [t for t in tids if t not in have]
    if missing:
        raise CalltraceError(f"no thread {missing[0]} in {trace.path} "
                             f"(threads: {', '.join(str(t.tid) for t in trace.threads) or 'none'})")
    return [t for t in trace.threads if t.tid in tids]
