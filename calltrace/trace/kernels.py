"""The native post-mortem kernels (runtime/kernels.c, runtime/format.c in
libcalltrace-convert.so), bound with ctypes like the converter (raw.py).
Each walks column batches (trace/colsource.py) with its state carried from
batch to batch, so memory stays bounded and no Python runs per call."""
from __future__ import annotations

import ctypes
from typing import Iterator

import numpy as np

from .colsource import Cols, Names
from ..bridge import Fmt, Pf
from ..runtime import converter_library as _library

_SZ = ctypes.c_size_t
_Fmt = Fmt


def _lib():
    return _library()


def _ptr(a: np.ndarray) -> int:
    return a.ctypes.data


def _c(a: np.ndarray, dtype) -> np.ndarray:
    return np.ascontiguousarray(a, dtype=dtype)


class Stats:
    """A thread's functions table, fed batch by batch: function id ->
    (calls, total_ns, self_ns, min_ns, max_ns)."""

    def __init__(self):
        self._lib = _lib()
        self._h = self._lib.ct_stats_new()
        if not self._h:
            raise MemoryError

    def feed(self, nnames: int, func: np.ndarray, depth: np.ndarray, dur: np.ndarray) -> None:
        """`nnames`: how many names there are so far (ids are below it)."""
        func, depth, dur = _c(func, np.int32), _c(depth, np.int32), _c(dur, np.int64)
        if self._lib.ct_stats_feed(self._h, nnames, _ptr(func), _ptr(depth), _ptr(dur), len(func)) < 0:
            raise MemoryError

    def finish(self, nnames: int) -> dict[int, tuple[int, ...]]:
        try:
            cap = max(1, nnames)
            out = np.zeros(5 * cap, np.uint64)
            nf = self._lib.ct_stats_finish(self._h, _ptr(out), cap)
        finally:
            self.close()
        cols = out.reshape(5, cap)[:, :nf]
        return {i: tuple(int(v) for v in cols[:, i]) for i in np.nonzero(cols[0])[0].tolist()}

    def close(self) -> None:
        if self._h:
            self._lib.ct_stats_free(self._h)
            self._h = None


def thread_stats(batches: Iterator[Cols], names: Names) -> dict[str, tuple[int, ...]]:
    """function -> (calls, total_ns, self_ns, min_ns, max_ns) for one thread."""
    stats = Stats()
    try:
        for c in batches:
            stats.feed(len(names), c.func, c.depth, c.dur)
    except BaseException:
        stats.close()
        raise
    return {names.names[i]: v for i, v in stats.finish(len(names)).items()}


def json_lines(names: Names, data: bytes, n: int, decode) -> tuple[np.ndarray, ...] | None:
    """The `n` call lines of `data` in the layout the writers give them
    (runtime/jsonl.c) as (func, depth, start, dur, rest): rest[i] is the
    (offset, length) of line i's optional keys, (0, 0) when it has none.
    `decode(literal)` gives a name literal not met before as a str. None
    when a line is in another layout."""
    lib = _lib()
    h = getattr(names, "_json", None)
    if h is None:
        import weakref
        h = names._json = lib.ct_jl_new()
        if not h:
            raise MemoryError
        weakref.finalize(names, lib.ct_jl_free, h)
    cols = (np.empty(n, np.int32), np.empty(n, np.int32), np.empty(n, np.int64), np.empty(n, np.int64))
    rest = np.empty((max(1, n), 2), np.uint64)
    pos, row, lit, litlen = _SZ(0), _SZ(0), _SZ(0), _SZ(0)
    while True:
        r = lib.ct_jl_parse(h, data, len(data), ctypes.byref(pos), ctypes.byref(row), *map(_ptr, cols),
                            _ptr(rest), n, ctypes.byref(lit), ctypes.byref(litlen))
        if r != 1:
            break
        literal = data[lit.value:lit.value + litlen.value]
        if lib.ct_jl_name(h, literal, len(literal), names.id(decode(literal))) < 0:
            raise MemoryError
    if r < 0:
        return None
    k = row.value
    return (*(c[:k] for c in cols), rest[:k])


class Slowest:
    """The N longest calls over any number of threads, with their paths."""

    def __init__(self, n: int):
        self._lib = _lib()
        self._h = self._lib.ct_slowest_new(n)
        if not self._h:
            raise MemoryError
        self.n = n
        self.extras: dict[tuple[int, int], dict | None] = {}   # winners' optional keys, by (thread, row)
        self._full, self._floor = False, -1

    def feed(self, thread: int, batches: Iterator[Cols], extras: bool = True, row: int = 0) -> None:
        """`extras`: keep the winners' optional keys from the batches, while
        each is at hand; else result() asks `fetch` for them at the end.
        `row`: the thread's row of the first batch's first call."""
        for c in batches:
            func, depth = _c(c.func, np.int32), _c(c.depth, np.int32)
            start, dur = _c(c.start, np.int64), _c(c.dur, np.int64)
            if self._lib.ct_slowest_feed(self._h, thread, row, _ptr(func), _ptr(depth), _ptr(start),
                                         _ptr(dur), len(func)) < 0:
                raise MemoryError
            # Once the list is full, a batch none of whose calls is longer
            # than its shortest added nothing (the kernel keeps ties out).
            if extras and len(func) and not (self._full and int(dur.max()) <= self._floor):
                entries = list(self._entries(paths=False))
                for _, _, _, r, t, _ in entries:
                    if t == thread and row <= r < row + len(func) and (t, r) not in self.extras:
                        i = r - row
                        keyed = c.keyed[i] if c.keyed is not None else (c.values[i] or c.note[i] or c.flags[i])
                        self.extras[(t, r)] = (c.extra(i) or None) if keyed else None
                self._full = len(entries) == self.n
                self._floor = min((e[0] for e in entries), default=-1)
            row += len(func)

    def _entries(self, paths: bool = True):
        fields = np.zeros(5, np.int64)
        path = np.zeros(1 << 16 if paths else 1, np.int32)
        i = 0
        while True:
            n = self._lib.ct_slowest_get(self._h, i, _ptr(fields), _ptr(path), len(path))
            if n < 0:
                return
            dur, start, seq, row, thread = (int(v) for v in fields)
            yield dur, start, seq, row, thread, (path[:n].tolist() if paths else None)
            i += 1

    def ranked(self) -> list[tuple]:
        """(duration, start, thread, row, path ids), longest first, ties in
        call order."""
        entries = sorted(self._entries(), key=lambda e: (-e[0], e[2]))
        return [(dur, start, t, row, path) for dur, start, _, row, t, path in entries]

    def result(self, names: Names, fetch=None) -> list[tuple]:
        """ranked() with names and extras: see ranked_calls()."""
        return ranked_calls(self.ranked(), names.names, self.extras, fetch)

    def close(self) -> None:
        if self._h:
            self._lib.ct_slowest_free(self._h)
            self._h = None


def ranked_calls(ranked: list[tuple], names: list[str], known: dict, fetch=None) -> list[tuple]:
    """(duration, start, thread index, path names, extra) of Slowest.ranked()
    entries. `known`: extras at hand by (thread, row); `fetch(thread, rows)`
    gives {row: extra or None} for the others."""
    if fetch is not None:
        wanted: dict[int, list[int]] = {}
        for _, _, t, row, _ in ranked:
            if (t, row) not in known:
                wanted.setdefault(t, []).append(row)
        for t, rows in wanted.items():
            known.update(((t, r), e) for r, e in fetch(t, rows).items())
    return [(dur, start, t, tuple(names[f] for f in path), known.get((t, row)))
            for dur, start, t, row, path in ranked]


class _Selecting:
    """What the text and perfetto kernels share: the -F/-N/-D/-t selection
    (struct ct_fmt, its state carried from batch to batch) over the trace's
    names, with -F/-N's per-function flags rebuilt as names are met."""

    def __init__(self, names: Names, flt, mode: int = 0, colour: bool = False):
        self._lib = _lib()
        self.names = names
        self.flt = flt
        self._nf = -1
        self._f = _Fmt(mode, int(colour), -1 if flt.max_depth is None else flt.max_depth, flt.min_ns,
                       None, None, None, None, -1, -1, 0)

    @property
    def shown(self) -> int:
        """Calls the selection passed."""
        return self._f.shown

    def _new_names(self) -> list[str] | None:
        """All names when some were met since the last call, else None."""
        if self._nf == len(self.names):
            return None
        names = self.names.names
        self._nf = len(names)
        want, excl = self.flt.function, self.flt.exclude
        self._want = np.array([bool(want.search(n)) for n in names] or [0], np.uint8) if want else None
        self._excl = np.array([bool(excl.search(n)) for n in names] or [0], np.uint8) if excl else None
        self._f.want = None if self._want is None else _ptr(self._want)
        self._f.exclude = None if self._excl is None else _ptr(self._excl)
        return names


class Formatter(_Selecting):
    """replay lines (mode 0) or chrome events (mode 1) of a thread's calls
    through the -F/-N/-D/-t selection; yields text blocks, and for calls
    with captured values, (Cols, row, shown depth) for Python to format."""
    REPLAY, CHROME = 0, 1

    def __init__(self, mode: int, names: Names, flt, colour: bool = False, prefix=None):
        super().__init__(names, flt, mode, colour)
        self.mode = mode
        self._prefix = prefix or (lambda name: name.encode("utf-8", "backslashreplace"))
        self._buf = ctypes.create_string_buffer(1 << 20)

    def _tables(self) -> None:
        """Per-function arrays, rebuilt when new names were met."""
        names = self._new_names()
        if names is None:
            return
        self._bytes = [self._prefix(n) for n in names]
        self._arr = (ctypes.c_char_p * max(1, len(names)))(*self._bytes)
        self._len = np.array([len(b) for b in self._bytes] or [0], np.uint32)
        self._f.names = ctypes.cast(self._arr, ctypes.c_void_p)
        self._f.namelen = _ptr(self._len)

    def reset(self) -> None:
        """A new thread: selection state starts over."""
        self._f.skip = self._f.root = -1

    def run(self, batches: Iterator[Cols]):
        used = _SZ(0)
        held = ctypes.c_int32(0)
        shown = ctypes.c_int64(0)
        buf = self._buf
        for c in batches:
            self._tables()
            func, depth = _c(c.func, np.int32), _c(c.depth, np.int32)
            start, dur = _c(c.start, np.int64), _c(c.dur, np.int64)
            flags = _c(c.flags, np.uint8)
            mask = c.values | c.note if self.mode == self.CHROME else c.values
            held_rows = _c(mask, np.uint8) if mask.any() else None
            i, n = 0, len(func)
            while i < n:
                i = self._lib.ct_fmt_rows(ctypes.byref(self._f), _ptr(func), _ptr(depth), _ptr(start),
                                          _ptr(dur), _ptr(flags), None if held_rows is None else _ptr(held_rows),
                                          i, n, buf, len(buf), ctypes.byref(used), ctypes.byref(held),
                                          ctypes.byref(shown))
                if used.value > (len(buf) >> 1) or held.value or i >= n:
                    if used.value:
                        yield buf.raw[:used.value]
                        used.value = 0
                if held.value:
                    yield (c, i, shown.value)
                    i += 1


class Perfetto(_Selecting):
    """A thread's calls, through the -F/-N/-D/-t selection, as TrackEvent
    BEGIN/END TracePackets of its packet sequence (runtime/perfetto.c).
    `wire` holds the tags and enum values; function id f is interned as
    iid f + 1. Yields encoded bytes."""
    BUFFER = 1 << 20        # bytes encoded between writes (at least a packet with the longest name)

    def __init__(self, wire: Pf, names: Names, flt):
        super().__init__(names, flt)
        self._p = wire
        self._buf = np.zeros(0, np.uint8)
        self._ends = np.zeros(256, np.int64)
        self._interned = np.zeros(0, np.uint8)

    def _tables(self) -> None:
        """The names as one UTF-8 blob, rebuilt when new names were met."""
        names = self._new_names()
        if names is None:
            return
        raw = [n.encode("utf-8", "backslashreplace") for n in names]
        self._blob = np.frombuffer(b"".join(raw) or b"\0", np.uint8)
        self._off = np.zeros(len(raw) + 1, np.uint64)
        np.cumsum([len(b) for b in raw], out=self._off[1:])
        interned = np.zeros(max(1, len(names)), np.uint8)
        interned[:len(self._interned)] = self._interned
        self._interned = interned
        # perfetto.c's PF_PACKET_MAX (192) beside the longest name, with room to spare
        size = max(self.BUFFER, max(map(len, raw), default=0) + 512)
        if len(self._buf) < size:        # keeping what is encoded but not yet written
            buf = np.zeros(size, np.uint8)
            buf[:len(self._buf)] = self._buf
            self._buf = buf
        p = self._p
        p.blob, p.off, p.interned = _ptr(self._blob), _ptr(self._off), _ptr(self._interned)

    def run(self, seq: int, batches: Iterator[Cols]):
        p, f = self._p, self._f
        p.seq, p.sp, p.last, p.pending = seq, 0, 0, -1
        f.skip = f.root = -1
        f.shown = 0
        self._interned[:] = 0
        used = _SZ(0)
        for c in batches:
            self._tables()
            func, depth = _c(c.func, np.int32), _c(c.depth, np.int32)
            start, dur = _c(c.start, np.int64), _c(c.dur, np.int64)
            self._room(int(depth.max()) + 1 if len(depth) else 0)
            i, n = 0, len(func)
            while i < n:
                buf = self._buf
                i = self._lib.ct_pf_rows(ctypes.byref(f), ctypes.byref(p), _ptr(func), _ptr(depth),
                                         _ptr(start), _ptr(dur), i, n, _ptr(buf), len(buf), ctypes.byref(used))
                if i > n:
                    raise MemoryError("perfetto kernel: the stack of open calls was not sized")
                if used.value > (len(buf) >> 1) or i < n:
                    yield memoryview(buf)[:used.value]
                    used.value = 0
        while self._lib.ct_pf_finish(ctypes.byref(p), _ptr(self._buf), len(self._buf), ctypes.byref(used)):
            yield memoryview(self._buf)[:used.value]
            used.value = 0
        if used.value:
            yield memoryview(self._buf)[:used.value]

    def _room(self, depth: int) -> None:
        """A stack of open calls' end times for `depth` of them."""
        if depth > len(self._ends):
            ends = np.zeros(max(depth, 2 * len(self._ends)), np.int64)
            ends[:self._p.sp] = self._ends[:self._p.sp]
            self._ends = ends
        self._p.ends, self._p.cap = _ptr(self._ends), len(self._ends)
