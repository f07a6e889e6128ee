"""Rolling output read back as one trace (CALLTRACE_FLUSH_INTERVAL parts).

Threads are joined by tid in part order. A call that spans a part boundary
is `incomplete` in the earlier part, and what it called later starts again
at depth 0 in the next part: each part is a valid trace on its own, and so
is the join."""
from __future__ import annotations

import itertools
import os
from collections.abc import Sequence
from typing import Iterator

from ..errors import TraceFormatError
from .model import Call, FunctionStats, Row, Thread, Trace
from .reader import load

_SUMS = ("total_calls", "incomplete_calls", "unwound_calls", "depth_limited_calls",
         "dropped_events", "filtered_calls")


class ChainedCalls(Sequence):
    """The calls of one thread across parts, streamed part after part."""

    def __init__(self, parts: list):
        self._parts = parts

    def __len__(self) -> int:
        return sum(len(p) for p in self._parts)

    def __iter__(self) -> Iterator[Call]:
        return itertools.chain.from_iterable(self._parts)

    def rows(self) -> Iterator[Row]:
        return itertools.chain.from_iterable(
            p.rows() if hasattr(p, "rows") else (c.to_row() for c in p) for p in self._parts)

    def __getitem__(self, i):
        if isinstance(i, slice):
            return list(itertools.islice(iter(self), *i.indices(len(self))))
        if i < 0:
            i += len(self)
        for p in self._parts:
            if i < len(p):
                return p[i]
            i -= len(p)
        raise IndexError(i)


def load_parts(paths: list[str]) -> Trace:
    traces = [load(p) for p in paths]
    index = lambda t: (t.metadata.get("part") or {}).get("index", 0)   # noqa: E731
    traces.sort(key=index)
    pids = {t.metadata.get("pid") for t in traces}
    if len(pids) > 1:
        raise TraceFormatError("these traces are not parts of one run (different pids: "
                               f"{', '.join(str(p) for p in sorted(pids))}); read them one at a time")
    for a, b in zip(traces, traces[1:]):
        if index(a) == index(b):
            what = f"part {index(a)} of one run" if index(a) else "one trace, not parts of a rolling run"
            raise TraceFormatError(f"{a.path} and {b.path} are {what}: give each part once, or read them "
                                   "one at a time")
    meta = dict(traces[-1].metadata)
    for key in _SUMS:
        meta[key] = sum(t.metadata.get(key, 0) or 0 for t in traces)
    meta["duration_ns"] = max(t.metadata["duration_ns"] for t in traces)
    meta["parts"] = [os.fspath(t.path) for t in traces]
    threads: dict[int, Thread] = {}
    chains: dict[int, list] = {}
    for t in traces:
        for th in t.threads:
            if th.tid not in threads:
                threads[th.tid] = Thread(th.tid, [], th.name, th.main)
                chains[th.tid] = []
            merged = threads[th.tid]
            merged.name = merged.name or th.name
            merged.main = merged.main or th.main
            chains[th.tid].append(th.calls)
    for tid, th in threads.items():
        th.calls = ChainedCalls(chains[tid])
    meta["thread_count"] = len(threads)
    functions: dict[str, FunctionStats] = {}
    for t in traces:
        for f in t.functions:
            g = functions.get(f.function)
            if g is None:
                functions[f.function] = FunctionStats(**{k: getattr(f, k) for k in f.__slots__})
                continue
            g.min_ns = min(g.min_ns, f.min_ns) if g.calls and f.calls else max(g.min_ns, f.min_ns)
            g.max_ns = max(g.max_ns, f.max_ns)
            g.calls += f.calls
            g.total_ns += f.total_ns
            g.self_ns += f.self_ns
    table = sorted(functions.values(), key=lambda f: (-f.self_ns, f.function))
    merged = Trace(meta, table, list(threads.values()), f"{traces[0].path} (+{len(traces) - 1} parts)")
    merged.truncated = any(t.truncated for t in traces)
    merged.warnings = [w for t in traces for w in t.warnings]
    return merged


def load_any(paths: list[str]) -> Trace:
    """One trace file, or the parts of one rolling run joined."""
    return load(paths[0]) if len(paths) == 1 else load_parts(paths)
