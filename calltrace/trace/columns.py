"""The trace format's columnar encoding (docs/FORMAT.md, "Parquet"): one row
per call, the metadata, function table and thread list as JSON in the file's
key-value metadata under ``calltrace``. Everything here streams record
batches; no function holds a whole trace."""
from __future__ import annotations

import json
import threading
from functools import lru_cache
from typing import Iterable, Iterator

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from ..bridge import COL_BEFORE, COL_HAS_PARENT, COL_INCOMPLETE, COL_UNWOUND
from ..files import starts_with
from .model import FunctionStats

# The system allocator gives freed batches back; Arrow's default pools keep
# them, and peak RSS would grow with the batches a command has seen.
pa.set_memory_pool(pa.system_memory_pool())

KEY = b"calltrace"
SUFFIXES = (".parquet", ".pq")      # output names that choose this encoding
BATCH = 1 << 18                 # calls per record batch and row group
STRING = pa.dictionary(pa.int32(), pa.string())

# Columns every call has are REQUIRED (not nullable): Parquet then stores no
# definition levels for them, a fifth of the encoding time.
SCHEMA = pa.schema([
    pa.field("thread", pa.int32(), False),           # index into the thread list
    pa.field("tid", pa.int64(), False),
    pa.field("call", pa.int64(), False),             # the call's row number: call order, thread after thread
    pa.field("parent", pa.int64()),                  # row number of the caller; null at depth 0
    pa.field("depth", pa.int32(), False),
    pa.field("function", STRING, False),
    pa.field("start_ns", pa.int64(), False),
    pa.field("duration_ns", pa.int64(), False),
    pa.field("incomplete", pa.bool_(), False),
    pa.field("unwound", pa.bool_(), False),
    pa.field("before_attach", pa.bool_(), False),
    pa.field("call_site", STRING),
    pa.field("args", pa.string()),                   # JSON text of the args list
    pa.field("args_note", pa.string()),
    pa.field("return", pa.string()),                 # JSON text of the VALUE
])
# Encodings chosen for writing speed at a small size (bench/bench_columnar.py):
# names as dictionaries; thread, tid and depth plain, as zstd makes their runs
# next to nothing at a third of a dictionary's cost; `call` and `start_ns`
# grow within a thread and `duration_ns` is mostly small, so their deltas are
# small; `parent` is smaller plain than as deltas (it jumps back at each
# return). The delta columns are not compressed: zstd took 9% of the
# encoding time to make them 7% smaller. All are encodings every Parquet
# reader decodes (BYTE_STREAM_SPLIT for integers would be smaller still, but
# is too new for many readers).
EXTRA = ("incomplete", "unwound", "before_attach", "call_site", "args", "args_note", "return")   # a call's optional keys
_DICTIONARY = ["function", "call_site", "args_note"]
_DELTA = ("call", "start_ns", "duration_ns")


def open_writer(path_or_file, header: dict) -> pq.ParquetWriter:
    """A writer for the calls; `header` (format, metadata, functions) goes
    in the footer with the thread list once the calls are written."""
    zstd = [c for c in SCHEMA.names if c not in _DELTA]
    return pq.ParquetWriter(
        path_or_file, SCHEMA, compression={c: "zstd" if c in zstd else "none" for c in SCHEMA.names},
        compression_level={c: 1 for c in zstd},
        use_dictionary=_DICTIONARY, column_encoding={c: "DELTA_BINARY_PACKED" for c in _DELTA},
        write_statistics=["thread", "tid", "call", "start_ns"],
        # One page per column and row group, written in few steps: fewer
        # compressor setups and page headers for the same bytes.
        write_batch_size=1 << 16, data_page_size=4 << 20,
        # A CRC per page: a damaged page of an uncompressed column (the
        # delta ones) would otherwise decode to other numbers, silently.
        write_page_checksum=True)


def close_writer(writer: pq.ParquetWriter, header: dict, threads: list[dict], index: dict) -> None:
    doc = dict(header)
    doc["threads"] = threads
    doc["index"] = index
    writer.add_key_value_metadata({KEY: json.dumps(doc, ensure_ascii=False, separators=(",", ":"))})
    writer.close()


def header_doc(metadata: dict, functions: Iterable[FunctionStats]) -> dict:
    return {"format": "calltrace", "version": 1, "metadata": metadata,
            "functions": [f.to_json() for f in functions]}


def thread_entry(tid: int, name: str | None, main: bool, calls: int, first_row: int) -> dict:
    return {"tid": tid, "name": name, "main": main, "calls": calls, "first_row": first_row}


def batch(thread: int, tid: int, first_row: int, func: np.ndarray, names: pa.Array,
          depth: np.ndarray, start: np.ndarray, dur: np.ndarray, incomplete: np.ndarray,
          unwound: np.ndarray, parent: np.ndarray, call_site=None, args=None, args_note=None,
          ret=None, before=None) -> pa.RecordBatch:
    """One record batch from per-call numpy columns. `parent` holds row
    numbers, negative at depth 0; it and the flags may be Arrow arrays
    already."""
    n = len(func)
    none = _constant(None, n, pa.string())
    cols = [
        _constant(thread, n, pa.int32()),
        _constant(tid, n, pa.int64()),
        pa.array(np.arange(first_row, first_row + n, dtype=np.int64)),
        parent if isinstance(parent, pa.Array) else pa.array(parent, pa.int64(), mask=parent < 0),
        pa.array(depth.astype(np.int32, copy=False)),
        pa.DictionaryArray.from_arrays(pa.array(func, pa.int32()), names),
        pa.array(_signed(start)),
        pa.array(_signed(dur)),
        _bools(incomplete),
        _bools(unwound),
        _constant(False, n, pa.bool_()) if before is None else _bools(before),
        _constant(None, n, STRING) if call_site is None else pa.array(call_site, pa.string()).dictionary_encode(),
        none if args is None else pa.array(args, pa.string()),
        none if args_note is None else pa.array(args_note, pa.string()),
        none if ret is None else pa.array(ret, pa.string()),
    ]
    return pa.RecordBatch.from_arrays(cols, schema=SCHEMA)


def _bools(flags) -> pa.Array:
    return flags if isinstance(flags, pa.Array) else pa.array(flags, pa.bool_())


def _bitmap(n: int, bits: np.ndarray, nulls: int | None = None, values: np.ndarray | None = None) -> pa.Array:
    """A bool array of `n` rows from a bitmap of the walk (copied: the walk
    reuses it), or with `values` an int64 array whose validity it is."""
    bits = pa.py_buffer(bits.copy())
    if values is None:
        return pa.Array.from_buffers(pa.bool_(), n, [None, bits])
    return pa.Array.from_buffers(pa.int64(), n, [bits, pa.py_buffer(values.copy())], null_count=nulls)


@lru_cache(maxsize=8)
def _constant(value, n: int, type_: pa.DataType) -> pa.Array:
    """`n` times `value` (None: nulls); batches of one thread share them."""
    return pa.nulls(n, type_) if value is None else pa.array(np.full(n, value, type_.to_pandas_dtype()))


def _signed(a: np.ndarray) -> np.ndarray:
    return a.view(np.int64) if a.dtype == np.uint64 else a.astype(np.int64, copy=False)


def extra(b: pa.RecordBatch, i: int) -> dict:
    """The optional keys of row `i` of `b` (a batch or table), as in JSON."""
    d = {}
    for name in EXTRA:
        v = b.column(name)[i].as_py()
        if v is None or v is False:
            continue
        d[name] = json.loads(v) if name in ("args", "return") else v
    return d


def rows_to_batches(rows: Iterable[tuple], thread: int, tid: int, first_row: int,
                    index: dict[str, int], names: list[str]) -> Iterator[pa.RecordBatch]:
    """Batches from a thread's Row tuples (a JSON trace): the parent of each
    call is found with the stack of open calls. New function names are
    appended to `names`/`index`."""
    stack: list[int] = []
    row = first_row
    it = iter(rows)
    while True:
        chunk = [r for _, r in zip(range(BATCH), it)]
        if not chunk:
            return
        n = len(chunk)
        func = np.empty(n, np.int32)
        depth = np.empty(n, np.int64)
        parent = np.empty(n, np.int64)
        start = np.empty(n, np.int64)
        dur = np.empty(n, np.int64)
        inc = np.zeros(n, bool)
        unw = np.zeros(n, bool)
        bef = np.zeros(n, bool)
        extra_cols: dict[str, list] = {}
        for i, (fn, d, s, du, extra) in enumerate(chunk):
            f = index.get(fn)
            if f is None:
                f = index[fn] = len(names)
                names.append(fn)
            func[i] = f
            depth[i] = d
            del stack[d:]
            parent[i] = stack[-1] if stack and len(stack) == d else -1
            stack.append(row + i)
            start[i] = s
            dur[i] = du
            if extra:
                inc[i] = bool(extra.get("incomplete"))
                unw[i] = bool(extra.get("unwound"))
                bef[i] = bool(extra.get("before_attach"))
                for key, value in extra.items():
                    if key in ("call_site", "args", "args_note", "return"):
                        col = extra_cols.setdefault(key, [None] * n)
                        col[i] = value if key in ("call_site", "args_note") else json.dumps(
                            value, ensure_ascii=False, separators=(",", ":"))
        yield batch(thread, tid, row, func, pa.array(names, pa.string()), depth, start, dur, inc,
                    unw, parent, extra_cols.get("call_site"), extra_cols.get("args"),
                    extra_cols.get("args_note"), extra_cols.get("return"), before=bef)
        row += n


def write_trace(out, trace) -> int:
    """Write a loaded trace (any format) as Parquet to `out` (a path or a
    binary file); returns the number of calls written."""
    header = header_doc(trace.metadata, trace.functions)
    names = [f.function for f in trace.functions]
    index = {n: i for i, n in enumerate(names)}
    threads = []
    writer = open_writer(out, header)
    summary = index_builder()
    row = 0
    try:
        for ti, t in enumerate(trace.threads):
            first = row
            summary.start_thread()
            for b in rows_to_batches(t.rows(), ti, t.tid, row, index, names):
                summary.feed(b)
                writer.write_batch(b)
                row += b.num_rows
            summary.end_thread()
            threads.append(thread_entry(t.tid, t.name, t.main, row - first, first))
    except BaseException:
        summary.close()
        writer.close()
        raise
    close_writer(writer, header, threads, summary.doc())
    return row


def index_builder(names: list[str] | None = None, tables=None):
    # The footer index reads batches in this module's layout: imported late.
    from .index import Builder
    return Builder(names, tables)


def write_raw(out, raw, header: dict, names: list[str], threads: list[tuple],
              notes: list[bytes | None] | None, tables=None, functions=None) -> int:
    """Stream a raw trace's calls (RawStream.columns, walked in C) as
    Parquet; `threads` are (tid, name, main) in RawStream.threads() order;
    `tables`: RawStream.thread_table when it kept them; `functions()`: the
    header's functions, once the walk has made their tables. The walk makes
    each batch while a thread of its own encodes the one before (_Encoder)."""
    names_arr = pa.array(names, pa.string())
    writer = open_writer(out, header)
    encoder = _Encoder(writer)
    # The measuring pass's tables are by function: the index's are by
    # name, the same when no two functions share one.
    unique = len(set(names)) == len(names)
    summary = index_builder(names if unique else None, tables if unique else None)
    entries = []
    row = 0
    try:
        for ti, (tid, name, main) in enumerate(threads):
            first = row
            summary.start_thread()

            def emit(c):
                nonlocal row
                n = len(c["func"])
                bits = c["bits"]
                args = note = None
                if c["extra_off"][-1]:
                    args, note = _fragments(c["extra_off"], c["extra"])
                # The walk reuses its buffers once emit returns: copy what
                # Arrow would otherwise share.
                b = batch(ti, tid, row, c["func"].copy(), names_arr, c["depth"].copy(), c["start"].copy(),
                          c["dur"].copy(), _bitmap(n, bits[COL_INCOMPLETE]), _bitmap(n, bits[COL_UNWOUND]),
                          _bitmap(n, bits[COL_HAS_PARENT], c["roots"], c["parent"]), None, args, note,
                          before=_bitmap(n, bits[COL_BEFORE]))
                summary.feed(b)
                encoder.put(b)
                row += n
            raw.columns(ti, emit, notes, parent_base=first)
            summary.end_thread()
            entries.append(thread_entry(tid, name, main, row - first, first))
        encoder.finish()
    except BaseException:
        summary.close()
        encoder.finish(quiet=True)
        writer.close()
        raise
    if functions is not None:
        header = dict(header, functions=functions())
    close_writer(writer, header, entries, summary.doc())
    return row


class _Encoder:
    """Writes record batches in a thread of its own: pyarrow encodes one batch
    while the caller (the C walk) makes the next; both release the GIL. put()
    returns once the writer has taken its batch, so at most two batches are
    alive. The writer's error is raised by the next put() or by finish()."""

    def __init__(self, writer: pq.ParquetWriter):
        self._writer = writer
        self._slot: list[pa.RecordBatch | None] = []
        self._cond = threading.Condition()
        self._error: BaseException | None = None
        # A daemon: a second Ctrl-C ends the process without waiting for it.
        self._thread = threading.Thread(target=self._run, name="calltrace-parquet", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while True:
            with self._cond:
                self._cond.wait_for(lambda: self._slot)
                b = self._slot.pop(0)
                self._cond.notify_all()
            if b is None:
                return
            if self._error is None:      # after an error, only drain
                try:
                    self._writer.write_batch(b)
                except BaseException as e:
                    self._error = e
            del b

    def put(self, b: pa.RecordBatch) -> None:
        if self._error is not None:
            raise self._error
        with self._cond:
            self._slot.append(b)
            self._cond.notify_all()
            self._cond.wait_for(lambda: not self._slot)

    def finish(self, quiet: bool = False) -> None:
        """Wait until every batch put is written (the writer is then free to
        close) and raise the writer's error; `quiet`: on the way out of an
        error, drop the batch not yet taken and raise nothing."""
        with self._cond:
            if quiet:
                self._slot.clear()
            self._slot.append(None)
            self._cond.notify_all()
        self._thread.join()
        if self._error is not None and not quiet:
            raise self._error


def _fragments(off: np.ndarray, data: np.ndarray) -> tuple[list, list]:
    """The C walk's `,"args":[...]` / `,"args_note":"..."` fragments as the
    args and args_note columns (only calls that have one are visited)."""
    n = len(off) - 1
    text = data[:off[-1]].tobytes()
    args: list = [None] * n
    note: list = [None] * n
    for i in np.nonzero(off[1:] != off[:-1])[0].tolist():
        frag = text[off[i]:off[i + 1]].decode("utf-8", "backslashreplace")
        if frag.startswith(',"args":'):
            args[i] = frag[8:]
        elif frag.startswith(',"args_note":'):
            note[i] = json.loads(frag[13:])
    return args, note


def is_parquet_name(path: str) -> bool:
    return str(path).endswith(SUFFIXES)


def is_parquet_file(path: str) -> bool:
    return starts_with(path, b"PAR1")
