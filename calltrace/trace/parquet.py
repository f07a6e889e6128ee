"""Load a Parquet trace (docs/FORMAT.md, "Parquet"): the header from the
footer's key-value metadata at once, the calls streamed a record batch at a
time, so memory stays bounded whatever the trace's size."""
from __future__ import annotations

import json
import os
from contextlib import contextmanager
from typing import Iterator

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from ..errors import TraceFormatError
from .columns import EXTRA, KEY, SCHEMA, extra
from .index import read as read_index
from .model import Row, StreamedCalls, Thread, Trace

READ_BATCH = 1 << 16
ROW_COLUMNS = ["function", "depth", "start_ns", "duration_ns", *EXTRA]
LEAN_COLUMNS = ROW_COLUMNS[:4]


class ParquetCalls(StreamedCalls):
    """One thread's calls: rows first_row .. first_row + count of the file."""

    def __init__(self, path: str, groups: list[tuple[int, int]], first_row: int, count: int,
                 table: dict[str, tuple[int, ...]] | None = None):
        self._path = path
        self._groups = groups        # (first row, rows) of each row group
        self.first_row = first_row
        self._count = count
        self.table = table           # the footer index's functions table of these calls

    def __len__(self) -> int:
        return self._count

    def batches(self, columns: list[str] | None = None) -> Iterator[pa.RecordBatch]:
        """The thread's rows as record batches of the requested columns."""
        lo, hi = self.first_row, self.first_row + self._count
        if lo == hi:
            return
        wanted = [i for i, (first, n) in enumerate(self._groups) if first < hi and first + n > lo]
        if not wanted:      # rows the thread list promises and the file lacks (a warning says so)
            return
        row = self._groups[wanted[0]][0]
        with damage(self._path):
            f = pq.ParquetFile(source(self._path), pre_buffer=False, buffer_size=1 << 20,
                               page_checksum_verification=True)
            # the columns decode in parallel: a batch's worth of memory each
            for b in f.iter_batches(batch_size=READ_BATCH, row_groups=wanted, columns=columns,
                                    use_threads=True):
                n = b.num_rows
                a, z = max(lo - row, 0), min(hi - row, n)
                if z > a:
                    yield _complete(b if (a, z) == (0, n) else b.slice(a, z - a), columns)
                row += n

    def extras(self, rows: list[int]) -> dict[int, dict | None]:
        """The optional keys of the given calls (row numbers within the
        thread), reading only the row groups that hold them."""
        out: dict[int, dict | None] = {}
        by_group: dict[int, list[int]] = {}
        for r in rows:
            at = self.first_row + r
            g = next(i for i, (first, n) in enumerate(self._groups) if first <= at < first + n)
            by_group.setdefault(g, []).append(r)
        with damage(self._path):
            f = pq.ParquetFile(source(self._path), page_checksum_verification=True)
            for g, rs in by_group.items():
                b = _complete(f.read_row_group(g, columns=list(EXTRA)), EXTRA)
                first = self._groups[g][0]
                for r in rs:
                    out[r] = extra(b, self.first_row + r - first) or None
        return out

    def rows(self) -> Iterator[Row]:
        """(function, depth, start_ns, duration_ns, extra-or-None) per call."""
        for b in self.batches(ROW_COLUMNS):
            yield from batch_rows(b)

    def columns(self, names, lean: bool = False):
        """The calls as column batches (trace/colsource.py)."""
        from .colsource import arrow_batch
        for b in self.batches(LEAN_COLUMNS if lean else ROW_COLUMNS):
            yield arrow_batch(b, names, lean)


def source(path: str):
    """What pyarrow opens for `path`: it takes names as UTF-8 text, so a name
    with other bytes in it (as Linux allows) is opened by its bytes."""
    try:
        path.encode()
        return path
    except UnicodeEncodeError:
        return pa.OSFile(os.fsencode(path))


@contextmanager
def damage(path: str):
    """pyarrow's errors reading a file's data (a damaged page, a column of
    another type) as one line naming the file."""
    try:
        yield
    except (pa.ArrowException, OSError) as e:
        raise TraceFormatError(f"{path}: damaged or foreign Parquet data: {' '.join(str(e).split())}") from None


# The columns a reader cannot do without, and the kinds of their types.
_CORE = {"thread": pa.types.is_integer, "tid": pa.types.is_integer, "call": pa.types.is_integer,
         "parent": pa.types.is_integer, "depth": pa.types.is_integer, "start_ns": pa.types.is_integer,
         "duration_ns": pa.types.is_integer,
         "function": lambda t: pa.types.is_string(t) or pa.types.is_large_string(t) or
         (pa.types.is_dictionary(t) and pa.types.is_string(t.value_type))}


def _check_columns(path: str, schema: pa.Schema) -> None:
    for name, fits in _CORE.items():
        i = schema.get_field_index(name)
        if i < 0:
            raise TraceFormatError(f"{path}: a calltrace footer, but no {name} column: not a calltrace trace")
        if not fits(schema.field(i).type):
            raise TraceFormatError(f"{path}: a calltrace footer, but its {name} column holds "
                                   f"{schema.field(i).type}: not a calltrace trace")


def _complete(b, columns):
    """`b` (a record batch or table) with the requested columns it lacks (a
    file written before they were added, or by another writer) as their
    absent value: false flags, null values."""
    missing = [c for c in columns or () if b.schema.get_field_index(c) < 0]
    if not missing:
        return b
    arrays, fields = list(b.columns), list(b.schema)
    for c in missing:
        field = SCHEMA.field(c)
        arrays.append(pa.array(np.zeros(b.num_rows, bool)) if field.type == pa.bool_()
                      else pa.nulls(b.num_rows, field.type))
        fields.append(field)
    return type(b).from_arrays(arrays, schema=pa.schema(fields))


def batch_rows(b: pa.RecordBatch) -> list[tuple]:
    fn = b.column("function")
    if isinstance(fn, pa.DictionaryArray):
        names = fn.dictionary.to_pylist()
        fns = [names[i] for i in fn.indices.to_numpy(zero_copy_only=False).tolist()]
    else:
        fns = fn.to_pylist()
    depth = b.column("depth").to_numpy().tolist()
    start = b.column("start_ns").to_numpy().tolist()
    dur = b.column("duration_ns").to_numpy().tolist()
    extras: list = [None] * b.num_rows
    import pyarrow.compute as pc
    mask = None
    for name in EXTRA:
        col = b.column(name)
        m = col if col.type == pa.bool_() else pc.is_valid(col)
        m = pc.fill_null(m, False)
        mask = m if mask is None else pc.or_(mask, m)
    if mask is not None and pc.any(mask).as_py():
        for i in pc.indices_nonzero(mask).to_pylist():
            extras[i] = extra(b, i)
    return list(zip(fns, depth, start, dur, extras))


def header(path: str) -> dict:
    """The `calltrace` document of a Parquet trace's footer (threads without calls)."""
    try:
        md = pq.read_metadata(source(path))
    except (pa.ArrowException, OSError) as e:
        raise TraceFormatError(f"{path}: not a readable Parquet file ({' '.join(str(e).split())})") from None
    kv = md.metadata or {}
    if KEY not in kv:
        raise TraceFormatError(f"{path}: a Parquet file, but not a calltrace trace "
                               "(no calltrace key in its metadata)")
    try:
        doc = json.loads(kv[KEY])
    except ValueError:
        raise TraceFormatError(f"{path}: damaged calltrace metadata in the Parquet footer") from None
    try:
        schema = md.schema.to_arrow_schema()
    except (pa.ArrowException, OSError) as e:
        raise TraceFormatError(f"{path}: not a readable Parquet file ({' '.join(str(e).split())})") from None
    _check_columns(path, schema)
    if not isinstance(doc, dict) or not isinstance(doc.get("metadata"), dict):
        raise TraceFormatError(f"{path}: damaged calltrace metadata in the Parquet footer")
    doc["_groups"] = [(0, 0)] * md.num_row_groups
    first = 0
    for i in range(md.num_row_groups):
        n = md.row_group(i).num_rows
        doc["_groups"][i] = (first, n)
        first += n
    doc["_rows"] = first
    return doc


def _index(doc: dict | None, threads: list[dict], trace: Trace):
    """The footer index, or None: a file without one, or with one that does
    not fit its threads, is read by scanning its calls (with a warning)."""
    if doc is None:
        return None
    try:
        return read_index(doc, threads)
    except (KeyError, IndexError, TypeError, ValueError) as e:
        trace.warnings.append(f"the footer's index is malformed ({e}); "
                              "computing from the calls instead")
        return None


def load_parquet(path: str) -> Trace:
    from .reader import _header
    doc = header(path)
    groups, rows = doc.pop("_groups"), doc.pop("_rows")
    threads_doc = doc.get("threads")
    doc["threads"] = []
    trace = _header(doc, path)
    try:
        index = _index(doc.get("index"), threads_doc, trace)
        for i, t in enumerate(threads_doc):
            table = index.tables[i] if index and index.tables else None
            calls = ParquetCalls(path, groups, t["first_row"], t["calls"], table)
            trace.threads.append(Thread(t["tid"], calls, t.get("name"), t.get("main", False)))
    except (KeyError, TypeError) as e:
        raise TraceFormatError(f"{path}: malformed thread list in the Parquet footer ({e})") from None
    trace.index = index
    listed = sum(len(t.calls) for t in trace.threads)
    if listed != rows:
        trace.truncated = True
        trace.warnings.append(f"the file holds {rows} calls, its thread list {listed}")
    return trace
