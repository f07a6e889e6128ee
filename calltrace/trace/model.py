"""Typed values for a loaded trace (see docs/FORMAT.md)."""
from __future__ import annotations

import os

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Iterator, NamedTuple


class Row(NamedTuple):
    """One call as a plain tuple: the fast form analyses iterate over.
    ``extra`` holds the optional JSON keys (``incomplete``, ``args``,
    ``return``, ...) as they appear in the file, or None when there are none."""
    function: str
    depth: int
    start_ns: int
    duration_ns: int
    extra: dict | None = None


@dataclass(slots=True)
class Call:
    function: str
    depth: int
    start_ns: int
    duration_ns: int
    incomplete: bool = False
    unwound: bool = False
    call_site: str | None = None
    args: list[dict] | None = None
    args_note: str | None = None
    ret: dict | None = None
    before_attach: bool = False     # open when calltrace attach began (docs/FORMAT.md)

    @property
    def end_ns(self) -> int:
        return self.start_ns + self.duration_ns

    @classmethod
    def from_json(cls, d: dict) -> "Call":
        return cls(d["function"], d["depth"], d["start_ns"], d["duration_ns"],
                   d.get("incomplete", False), d.get("unwound", False),
                   d.get("call_site"), d.get("args"), d.get("args_note"), d.get("return"),
                   d.get("before_attach", False))

    @classmethod
    def from_row(cls, row: tuple) -> "Call":
        function, depth, start, dur, extra = row
        if extra is None:
            return cls(function, depth, start, dur)
        return cls(function, depth, start, dur, extra.get("incomplete", False),
                   extra.get("unwound", False), extra.get("call_site"), extra.get("args"),
                   extra.get("args_note"), extra.get("return"), extra.get("before_attach", False))

    def to_row(self) -> Row:
        d = self.to_json()
        for k in ("function", "depth", "start_ns", "duration_ns"):
            del d[k]
        return Row(self.function, self.depth, self.start_ns, self.duration_ns, d or None)

    def to_json(self) -> dict:
        d: dict[str, Any] = {"function": self.function, "depth": self.depth,
                             "start_ns": self.start_ns, "duration_ns": self.duration_ns}
        if self.incomplete:
            d["incomplete"] = True
        if self.unwound:
            d["unwound"] = True
        if self.before_attach:
            d["before_attach"] = True
        if self.call_site is not None:
            d["call_site"] = self.call_site
        if self.args is not None:
            d["args"] = self.args
        if self.args_note is not None:
            d["args_note"] = self.args_note
        if self.ret is not None:
            d["return"] = self.ret
        return d


class StreamedCalls(Sequence):
    """A thread's calls read from a file each time they are iterated;
    subclasses give ``rows()`` and ``__len__``."""
    _cache: list | None = None

    def rows(self) -> Iterator[Row]:
        raise NotImplementedError

    def __iter__(self) -> Iterator[Call]:
        from_row = Call.from_row
        for row in self.rows():
            yield from_row(row)

    def __getitem__(self, i):
        # Random access needs the list in memory: fine for small traces only.
        if self._cache is None:
            self._cache = list(self)
        return self._cache[i]


@dataclass(slots=True)
class FunctionStats:
    function: str
    calls: int = 0
    total_ns: int = 0
    self_ns: int = 0
    min_ns: int = 0
    max_ns: int = 0
    address: str | None = None
    module: str | None = None
    file: str | None = None
    line: int | None = None
    symbol: str | None = None

    @classmethod
    def from_json(cls, d: dict) -> "FunctionStats":
        return cls(d["function"], d["calls"], d["total_ns"], d["self_ns"], d["min_ns"],
                   d["max_ns"], d.get("address"), d.get("module"), d.get("file"),
                   d.get("line"), d.get("symbol"))

    def to_json(self) -> dict:
        d: dict[str, Any] = {"function": self.function}
        if self.symbol and self.symbol != self.function:
            d["symbol"] = self.symbol
        if self.address is not None:
            d["address"] = self.address
        d.update(module=self.module, file=self.file, line=self.line, calls=self.calls,
                 total_ns=self.total_ns, self_ns=self.self_ns, min_ns=self.min_ns,
                 max_ns=self.max_ns)
        return d


@dataclass(slots=True)
class Thread:
    """A thread's calls in call order. ``calls`` is a list when built in
    memory, or a lazy sequence streamed from the file (see reader.CallList)
    when loaded: iterate it, take ``len()``; avoid random access on big traces."""
    tid: int
    calls: list[Call] = field(default_factory=list)
    name: str | None = None
    main: bool = False

    def __iter__(self) -> Iterator[Call]:
        return iter(self.calls)

    def rows(self) -> Iterator[Row]:
        """The calls as Row tuples: about five times faster than Call objects."""
        rows = getattr(self.calls, "rows", None)
        if rows is not None:
            return rows()
        return (c.to_row() for c in self.calls)

    @property
    def label(self) -> str:
        return f"thread {self.tid}" + (f" ({self.name})" if self.name else "")


@dataclass(slots=True)
class Trace:
    metadata: dict
    functions: list[FunctionStats]
    threads: list[Thread]
    path: str | None = None
    # Set when the file ends early: the calls before the cut are still readable.
    truncated: bool = False
    warnings: list[str] = field(default_factory=list)
    source: Any = None  # reader-private: where lazy call lists read from
    # A Parquet footer's index (trace/index.py): its longest calls, valid
    # for exactly these threads and calls; a view of the trace has none.
    index: Any = None

    @property
    def total_calls(self) -> int:
        return self.metadata["total_calls"]

    def copied_note(self) -> None:
        """Before this trace is written out as a trace again: a truncated
        one says so in the copy, which has no cut of its own to show it."""
        if self.truncated:
            name = os.path.basename(self.path or "") or "the source"
            self.metadata.setdefault("notes", []).append(
                f"copied from a truncated trace ({name}): only the calls before the cut are here; "
                "total_calls and the functions table describe the whole recording")

    def iter_calls(self) -> Iterator[tuple[Thread, Call]]:
        for t in self.threads:
            for c in t.calls:
                yield t, c
