"""The native kernels of the flame-graph and event exports: the aggregated
call tree (runtime/tree.c) and the speedscope and html writers
(runtime/events.c), over column batches (trace/colsource.py) through the
-F/-N/-D/-t selection, with their state carried from batch to batch."""
from __future__ import annotations

import ctypes
from typing import Iterator

import numpy as np

from .colsource import Cols, Names
from .kernels import _c, _ptr, _Selecting

_SZ = ctypes.c_size_t


class Tree(_Selecting):
    """Calls merged by call path: one node per distinct path (tree.c)."""

    def __init__(self, names: Names, flt):
        super().__init__(names, flt)
        self._h = self._lib.ct_tree_new()
        if not self._h:
            raise MemoryError

    def feed(self, batches: Iterator[Cols]) -> None:
        """One thread's calls."""
        self._lib.ct_tree_thread(self._h)
        self._f.skip = self._f.root = -1
        for c in batches:
            self._new_names()
            func, depth, dur = _c(c.func, np.int32), _c(c.depth, np.int32), _c(c.dur, np.int64)
            if self._lib.ct_tree_feed(self._h, ctypes.byref(self._f), _ptr(func), _ptr(depth), _ptr(dur),
                                      len(func)) < 0:
                raise MemoryError

    def nodes(self) -> tuple[np.ndarray, ...]:
        """(parent, function id, calls, total_ns) per node, parents first;
        node 0 is the root (parent and function -1)."""
        n = self._lib.ct_tree_nodes(self._h, None, None, None, None, 0)
        cols = (np.zeros(n, np.int32), np.zeros(n, np.int32), np.zeros(n, np.uint64), np.zeros(n, np.uint64))
        self._lib.ct_tree_nodes(self._h, *map(_ptr, cols), n)
        return cols

    def close(self) -> None:
        if self._h:
            self._lib.ct_tree_free(self._h)
            self._h = None


class Events(_Selecting):
    """speedscope events or html timeline rows of each thread's calls.
    `seed` gives function names their output index (frame, function
    table row); a function first met later gets `next`, then on."""
    BUFFER = 1 << 20

    def __init__(self, names: Names, flt, seed: dict[str, int], next: int):
        super().__init__(names, flt)
        lut = np.full(max(1, len(names)), -1, np.int32)
        for name, i in seed.items():
            lut[names.id(name)] = i
        self._h = self._lib.ct_ev_new(_ptr(lut), len(names), next)
        if not self._h:
            raise MemoryError
        self._buf = ctypes.create_string_buffer(max(self.BUFFER, 512))   # room for a few events

    def thread(self) -> tuple[int, int, bool]:
        """Ends a thread: (its first event time, its latest, whether it had
        events), and starts the next one (`shown` starts again from 0)."""
        out = np.zeros(3, np.int64)
        self._lib.ct_ev_thread(self._h, _ptr(out))
        self._f.skip = self._f.root = -1
        self._f.shown = 0
        return int(out[0]), int(out[1]), bool(out[2])

    def index(self) -> dict[str, int]:
        """Function name -> output index, for every function written or seeded."""
        n = self._lib.ct_ev_lut(self._h, None, 0)
        lut = np.zeros(max(1, n), np.int32)
        self._lib.ct_ev_lut(self._h, _ptr(lut), n)
        names = self.names.names
        return {names[f]: int(lut[f]) for f in np.nonzero(lut[:n] >= 0)[0].tolist()}

    def speedscope(self, batches: Iterator[Cols]) -> Iterator[bytes]:
        """A thread's open/close events, after thread()."""
        used = _SZ(0)
        buf = self._buf
        for c in batches:
            self._new_names()
            func, depth = _c(c.func, np.int32), _c(c.depth, np.int32)
            start, dur = _c(c.start, np.int64), _c(c.dur, np.int64)
            i, n = 0, len(func)
            while i < n:
                i = self._lib.ct_ss_rows(self._h, ctypes.byref(self._f), _ptr(func), _ptr(depth), _ptr(start),
                                         _ptr(dur), i, n, buf, len(buf), ctypes.byref(used))
                if i > n:
                    raise MemoryError
                if used.value > (len(buf) >> 1) or i < n:
                    yield ctypes.string_at(buf, used.value)
                    used.value = 0
        while self._lib.ct_ss_finish(self._h, buf, len(buf), ctypes.byref(used)):
            yield ctypes.string_at(buf, used.value)
            used.value = 0
        if used.value:
            yield ctypes.string_at(buf, used.value)

    def budget(self, floor: int, full: int, quota: int) -> None:
        self._lib.ct_html_budget(self._h, floor, full, quota)

    def html(self, batches: Iterator[Cols]):
        """A thread's timeline rows, after thread(): text blocks, and for
        a kept call with optional keys, (Cols, row, its number) for Python
        to describe."""
        used = _SZ(0)
        k = ctypes.c_int64(-1)
        buf = self._buf
        for c in batches:
            self._new_names()
            func, depth = _c(c.func, np.int32), _c(c.depth, np.int32)
            start, dur = _c(c.start, np.int64), _c(c.dur, np.int64)
            keyed = c.keyed if c.keyed is not None else (c.values | c.note | (c.flags != 0))
            held = _c(keyed, np.uint8) if keyed.any() else None
            i, n = 0, len(func)
            while i < n:
                i = self._lib.ct_html_rows(self._h, ctypes.byref(self._f), _ptr(func), _ptr(depth), _ptr(start),
                                           _ptr(dur), None if held is None else _ptr(held), i, n, buf, len(buf),
                                           ctypes.byref(used), ctypes.byref(k))
                if i > n:
                    raise MemoryError
                if used.value > (len(buf) >> 1) or (i < n and k.value < 0):
                    yield ctypes.string_at(buf, used.value)
                    used.value = 0
                if k.value >= 0:
                    yield (c, i - 1, k.value)
        if used.value:
            yield ctypes.string_at(buf, used.value)

    def close(self) -> None:
        if self._h:
            self._lib.ct_ev_free(self._h)
            self._h = None


def histogram(batches: Iterator[Cols], names: Names, flt, counts: np.ndarray) -> None:
    """Adds a thread's calls that `flt` selects into counts (65 uint64) by
    the bit length of their duration (html's budget)."""
    sel = _Selecting(names, flt)
    for c in batches:
        sel._new_names()
        func, depth, dur = _c(c.func, np.int32), _c(c.depth, np.int32), _c(c.dur, np.int64)
        sel._lib.ct_html_hist(ctypes.byref(sel._f), _ptr(func), _ptr(depth), _ptr(dur), len(func), _ptr(counts))
