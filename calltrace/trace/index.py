"""The summaries a Parquet trace carries in its footer beside the calls
(docs/FORMAT.md, "Footer index"): each thread's functions table and the
trace's longest calls with their paths. The writer makes them with the
kernels a reader would run over the calls (trace/kernels.py), batch by batch
as the calls are written (a raw stream's converter hands over the tables its
measuring pass made, by the same rules), so `report --threads` and
`report --slowest N` read a table instead of every call. They are derived from the calls: a JSON
trace does not hold them, and converting either way loses nothing."""
from __future__ import annotations

from dataclasses import dataclass

import pyarrow as pa

from .colsource import Names
from .columns import extra
from .kernels import Slowest, Stats

SLOWEST = 100               # longest calls kept: report --slowest N reads them for N <= this
MAX_ROWS = 200_000          # per-thread table rows in all; past this, no per-thread tables


@dataclass(slots=True)
class Index:
    """A footer's index as read: `tables[i]` is thread i's functions table
    (name -> (calls, total, self, min, max)), None when the writer left
    them out; `slowest` the entries of Slowest.ranked()."""
    names: list[str]
    tables: list[dict[str, tuple[int, ...]]] | None
    slowest: list[tuple]
    extras: dict[tuple[int, int], dict | None]     # optional keys of the slowest, by (thread, row)
    limit: int


class Builder:
    """Fed every record batch a writer writes (trace/columns.py), thread
    after thread; doc() is the footer's `index`. `names`: the functions'
    names, when the batches' dictionary is that list (ids are then its
    indices); `tables`: thread i -> its functions table by name id,
    when the writer has them already (the converter's measuring pass), or
    None when they would pass MAX_ROWS; without it they are computed from
    the batches."""

    def __init__(self, names: list[str] | None = None, tables=None):
        self.names = Names(names or ())
        self._slowest = Slowest(SLOWEST)
        self._tables: list[list] | None = []
        self._known = tables
        self._stats: Stats | None = None
        self._thread = -1
        self._row = 0

    def start_thread(self) -> None:
        self._thread += 1
        self._row = 0
        if self._known is None:
            self._stats = Stats()

    def feed(self, b: pa.RecordBatch) -> None:
        fn = b.column("function")
        lut = self.names.arrow_lut(fn.dictionary)
        ids = fn.indices.to_numpy()
        func = ids if self.names.identity(lut) else lut[ids]
        depth = b.column("depth").to_numpy()
        start = b.column("start_ns").to_numpy()
        dur = b.column("duration_ns").to_numpy()
        if self._stats is not None:
            self._stats.feed(len(self.names), func, depth, dur)
        self._slowest.feed(self._thread, [_Batch(func, depth, start, dur, b)], row=self._row)
        self._row += len(func)

    def end_thread(self) -> None:
        if self._known is not None:
            table = self._known(self._thread)
        else:
            table = self._stats.finish(len(self.names))
            self._stats.close()
            self._stats = None
        if table is None or self._tables is None:
            self._tables = None
        else:
            self._tables.append([[f, *v] for f, v in sorted(table.items())])

    def close(self) -> None:
        if self._stats is not None:
            self._stats.close()
            self._stats = None
        self._slowest.close()

    def doc(self) -> dict:
        ranked = self._slowest.ranked()
        known = self._slowest.extras
        self.close()
        tables = self._tables
        if tables is not None and sum(len(t) for t in tables) > MAX_ROWS:
            tables = None
        calls = [[d, s, t, r, p, known.get((t, r))] for d, s, t, r, p in ranked]
        return {"names": self.names.names, "threads": tables,
                "slowest": {"limit": SLOWEST, "calls": calls}}


class _Any:
    """Every row may have optional keys: extra() says which."""
    def __getitem__(self, i: int) -> bool:
        return True


class _Batch:
    """What Slowest.feed reads of a batch: the columns, and for the calls
    that rank, their optional keys."""
    __slots__ = ("func", "depth", "start", "dur", "_b")

    def __init__(self, func, depth, start, dur, b: pa.RecordBatch):
        self.func, self.depth, self.start, self.dur, self._b = func, depth, start, dur, b

    keyed = _Any()

    def extra(self, i: int) -> dict | None:
        return extra(self._b, i) or None


def read(doc: dict, threads: list[dict]) -> Index:
    """The footer's index for a trace with these thread entries (`calls`
    each). Raises ValueError when it does not fit them."""
    names = doc["names"]
    if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
        raise ValueError("names is not a list of strings")

    def name_ids(ids) -> bool:
        return isinstance(ids, list) and all(type(f) is int and 0 <= f < len(names) for f in ids)

    tables = doc["threads"]
    if tables is not None:
        if len(tables) != len(threads):
            raise ValueError(f"{len(tables)} tables for {len(threads)} threads")
        for t, entry in zip(tables, threads):
            if not all(isinstance(r, list) and len(r) == 6 and name_ids(r[:1]) and
                       all(type(v) is int and v >= 0 for v in r[1:]) for r in t):
                raise ValueError("a table row is not [name, calls, total, self, min, max]")
            if sum(r[1] for r in t) != entry["calls"]:
                raise ValueError(f"thread {entry['tid']}'s table does not count its calls")
        tables = [{names[r[0]]: tuple(r[1:]) for r in t} for t in tables]
    slow = doc["slowest"]
    limit, calls = slow["limit"], slow["calls"]
    total = sum(t["calls"] for t in threads)
    if type(limit) is not int or limit < 0 or len(calls) != min(limit, total):
        raise ValueError(f"{len(calls)} slowest calls kept of {total}, limit {limit!r}")
    ranked, extras = [], {}
    for d, s, t, r, p, e in calls:
        if not (0 <= t < len(threads) and 0 <= r < threads[t]["calls"] and name_ids(p) and p
                and type(d) is int and type(s) is int and (e is None or isinstance(e, dict))):
            raise ValueError("a slowest call out of range")
        ranked.append((d, s, t, r, p))
        extras[(t, r)] = e
    return Index(names, tables, ranked, extras, limit)
