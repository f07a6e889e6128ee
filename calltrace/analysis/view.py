"""A trace seen through the post-mortem filters (-F/-N/-D/-t, --tid): the
same Trace shape, its threads' calls streamed through paths.select, with
each call at the depth it is shown at. What exporters read."""
from __future__ import annotations

from typing import Iterator

from ..errors import CalltraceError
from ..trace.model import Row, StreamedCalls, Thread, Trace
from .paths import Filter, pick_threads, select


class FilteredCalls(StreamedCalls):
    def __init__(self, calls, flt: Filter, budget: "Budget | None"):
        self._calls = calls
        self._flt = flt
        self._budget = budget

    def rows(self) -> Iterator[Row]:
        rows = self._calls.rows() if hasattr(self._calls, "rows") else (c.to_row() for c in self._calls)
        if self._flt != Filter():
            rows = (Row(r[0], shown, r[2], r[3], r[4]) for r, shown in select(rows, self._flt))
        if self._budget is not None:
            rows = self._budget.count(rows)
        return rows

    def __len__(self) -> int:
        return sum(1 for _ in self.rows())

    def unwrap(self):
        """(the calls, the filter, the budget): for kernels that select themselves."""
        return self._calls, self._flt, self._budget


class Budget:
    """Stops an export that would write more than `limit` calls."""

    def __init__(self, limit: int, what: str):
        self.limit = limit
        self.what = what
        self.seen = 0

    def count(self, rows):
        for r in rows:
            self.seen += 1
            self.check(self.seen)
            yield r

    def check(self, seen: int) -> None:
        if seen > self.limit:
            raise CalltraceError(
                f"{self.what}: more than {self.limit:,} calls to export; narrow it with "
                f"-F/-N/-t/--tid or raise --max-events (nothing written)")


def selection(t: Thread) -> tuple[Thread, Filter, "Budget | None"]:
    """A thread of a view as its own calls, the filter and the budget, for
    the kernels that select calls themselves."""
    unwrap = getattr(t.calls, "unwrap", None)
    if unwrap is None:
        return t, Filter(), None
    calls, flt, budget = unwrap()
    return Thread(t.tid, calls, t.name, t.main), flt, budget


def view(trace: Trace, flt: Filter, tids=None, budget: Budget | None = None) -> Trace:
    """`trace` with only the threads in `tids` and the calls `flt` passes.
    The metadata and function table are the whole trace's."""
    threads = pick_threads(trace, tids)
    if flt == Filter() and not tids and budget is None:
        return trace
    out = Trace(trace.metadata, trace.functions,
                [Thread(t.tid, FilteredCalls(t.calls, flt, budget), t.name, t.main) for t in threads],
                trace.path, trace.truncated, trace.warnings, trace.source)
    return out
