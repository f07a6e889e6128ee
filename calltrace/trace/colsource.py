"""A thread's calls as batches of numpy columns, from either encoding: the
one path the post-mortem kernels (trace/kernels.py) read. Function names
become ids into a trace-wide Names list; captured values stay in the file
until a kernel hands a call back for Python to print."""
from __future__ import annotations

import json
from typing import Callable, Iterator, NamedTuple

import numpy as np


class Names:
    """Function name <-> id, shared by all threads of a trace."""

    def __init__(self, names=()):
        self.names: list[str] = []
        self.ids: dict[str, int] = {}
        self._json = None                        # JSON name literal -> id, in C (kernels.json_lines)
        self._last = None                        # (Arrow dictionary, its ids): batches share one
        for n in names:
            self.id(n)

    def id(self, name: str) -> int:
        i = self.ids.get(name)
        if i is None:
            i = self.ids[name] = len(self.names)
            self.names.append(name)
        return i

    def lut(self, names: list[str]) -> np.ndarray:
        return np.array([self.id(n) for n in names], dtype=np.int32)

    def arrow_lut(self, dictionary) -> np.ndarray:
        """lut() of an Arrow string array, remembered for the next batch
        (the batches of a row group, often of a file, share it)."""
        if self._last is None or not self._last[0].equals(dictionary):
            lut = self.lut(dictionary.to_pylist())
            self._last = (dictionary, lut, bool(np.array_equal(lut, np.arange(len(lut)))))
        return self._last[1]

    def identity(self, lut: np.ndarray) -> bool:
        """`lut` (the latest arrow_lut) maps each index to itself: the
        indices are the ids, with no lookup."""
        return self._last is not None and self._last[1] is lut and self._last[2]

    def __len__(self) -> int:
        return len(self.names)


class Cols(NamedTuple):
    func: np.ndarray        # int32 ids
    depth: np.ndarray       # int32
    start: np.ndarray       # int64
    dur: np.ndarray         # int64
    flags: np.ndarray       # uint8: 1 incomplete, 2 unwound
    values: np.ndarray      # bool: args or return captured
    note: np.ndarray        # bool: args_note present
    extra: Callable[[int], dict]   # the optional keys of row i, as in JSON
    keyed: np.ndarray | None = None  # bool: row i has optional keys (None: flags, values or note)


def columns(thread, names: Names, lean: bool = False) -> Iterator[Cols]:
    """The calls of `thread` (any loaded trace) as column batches. `lean`:
    only func, depth, start and dur are wanted (the flags and captured
    values may read as none), which spares a columnar file the other
    columns."""
    calls = thread.calls
    source = getattr(calls, "columns", None)
    if source is not None:
        yield from source(names, lean)
        return
    yield from rows_columns(thread.rows(), names)


BATCH = 1 << 16      # calls per batch made from Row tuples (tests make it small)


def rows_columns(rows, names: Names, size: int | None = None) -> Iterator[Cols]:
    """Column batches from Row tuples (a trace built in memory, or a JSON
    layout the fast reader does not know)."""
    size = size or BATCH
    it = iter(rows)
    while True:
        chunk = [r for _, r in zip(range(size), it)]
        if not chunk:
            return
        fn, depth, start, dur, extra = zip(*chunk)
        yield from_lists(names, fn, depth, start, dur, extra)


def from_lists(names: Names, fn, depth, start, dur, extra) -> Cols:
    n = len(fn)
    ids = names.ids
    func = np.fromiter((ids[f] if f in ids else names.id(f) for f in fn), np.int32, n)
    extras = {i: e for i, e in enumerate(extra) if e}
    flags, values, note, keyed = _marks(extras, n)
    return Cols(func, np.asarray(depth, np.int32), np.asarray(start, np.int64),
                np.asarray(dur, np.int64), flags, values, note, lambda i: extras.get(i) or {}, keyed)


def _marks(extras: dict[int, dict], n: int) -> tuple[np.ndarray, ...]:
    """Cols' flags, values and note, and keyed, of `n` rows from the
    optional keys of those that have some."""
    flags = np.zeros(n, np.uint8)
    values = np.zeros(n, bool)
    note = np.zeros(n, bool)
    keyed = np.zeros(n, bool)
    for i, e in extras.items():
        keyed[i] = bool(e)
        flags[i] = bool(e.get("incomplete")) | bool(e.get("unwound")) << 1
        values[i] = "args" in e or "return" in e
        note[i] = "args_note" in e
    return flags, values, note, keyed


def json_block(src, data: bytes, offset: int, names: Names, parse) -> Cols | None:
    """One block of call lines in the writers' layout, parsed natively
    (trace/kernels.json_lines): Python decodes each name once and only the
    optional keys of the lines that have them; a block in another layout
    goes to `parse`."""
    from .kernels import json_lines
    got = json_lines(names, data, data.count(b"\n") + (not data.endswith(b"\n")),
                     lambda literal: _name(src, literal, offset))
    if got is None:
        rows = parse(src, data, offset)
        return from_lists(names, *zip(*rows)) if rows else None
    func, depth, start, dur, rest = got
    n = len(func)
    if not n:
        return None
    from .reader import _extra
    extras = {}
    for i in np.nonzero(rest[:, 1])[0].tolist():
        at, length = rest[i].tolist()
        extras[i] = _extra(src, data[at:at + length], offset)
    flags, values, note, keyed = _marks(extras, n)
    return Cols(func, depth, start, dur, flags, values, note, lambda i: extras.get(i) or {}, keyed)


def _name(src, literal: bytes, offset: int) -> str:
    fn = src.names.get(literal)
    if fn is None:
        from ..errors import TraceFormatError
        try:
            fn = src.names[literal] = json.loads(literal)
        except ValueError:
            raise TraceFormatError(f"{src.path}: malformed function name near byte {offset}") from None
    return fn


def arrow_batch(b, names: Names, lean: bool = False) -> Cols:
    """Columns of a Parquet record batch (trace/parquet.py); see columns()
    for `lean`."""
    import pyarrow as pa
    import pyarrow.compute as pc
    from .columns import extra
    fn = b.column("function")
    if not isinstance(fn, pa.DictionaryArray):
        fn = fn.dictionary_encode()
    lut = names.arrow_lut(fn.dictionary)
    func = lut[fn.indices.to_numpy(zero_copy_only=False)] if len(lut) else np.zeros(0, np.int32)

    depth = b.column("depth").to_numpy().astype(np.int32, copy=False)
    if lean:
        none = np.zeros(len(func), bool)
        return Cols(func.astype(np.int32, copy=False), depth, b.column("start_ns").to_numpy(),
                    b.column("duration_ns").to_numpy(), none.view(np.uint8), none, none, lambda i: {})

    def valid(name):
        return pc.is_valid(b.column(name)).to_numpy(zero_copy_only=False)

    def flag(name):
        return pc.fill_null(b.column(name), False).to_numpy(zero_copy_only=False)

    flags = flag("incomplete").astype(np.uint8) | (flag("unwound").astype(np.uint8) << 1)
    values, note = valid("args") | valid("return"), valid("args_note")
    return Cols(func.astype(np.int32, copy=False), depth,
                b.column("start_ns").to_numpy(), b.column("duration_ns").to_numpy(), flags,
                values, note, lambda i: extra(b, i),
                values | note | valid("call_site") | (flags != 0) | flag("before_attach"))
