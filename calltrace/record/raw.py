"""The raw stream the runtime writes (docs/FORMAT.md, "The raw stream").

Python reads the header and the META records (program, argv, modules,
thread names); the event words are walked in C by libcalltrace-convert.so.
The layouts and the ctypes binding are calltrace/bridge.py's."""
from __future__ import annotations

import ctypes
import os
import struct
from dataclasses import dataclass, field

from ..bridge import (ARGS, CHUNK_HEADER, CHUNK_MAGIC, CHUNK_META, CLOCK_NAMES, HEADER_SIZE, META_CMDLINE,
                      META_EXE, META_MODULE, META_OPTION, META_OUTPUT, META_SCAN, META_THREAD, PROGRESS, RAW_MAGIC,
                      RAW_VERSION, BATCH, COL_BITMAPS, Chunk, Cols, Func, Header, Row, Summary, Thread)
from ..errors import TraceFormatError
from ..files import starts_with
from ..runtime import converter_library
from ..symbols import Module



@dataclass
class RawInfo:
    path: str
    chunk_size: int
    clock: str
    pid: int
    ppid: int
    start_ticks: int
    start_mono_ns: int
    start_real_ns: int
    ns_per_tick: float
    max_depth: int
    flags: int
    end_state: int
    exit_code: int
    end_signal: int
    main_tid: int
    part: int = 0               # rolling output: part number, 0 without parts
    keep: int = 0               # rolling: how many parts to keep (0: all)
    interval_calls: int = 0
    lost_calls: int = 0         # not recorded by threads without a chunk when recording stopped
    stop_reason: int = 0        # bridge.STOP_REASONS: recording stopped before the program ended
    dropped_parts: int = 0      # rolling: older parts deleted unconverted (bare LD_PRELOAD)
    max_size: int = 0
    exe: str = ""
    argv: list[str] = field(default_factory=list)
    output: str = ""
    modules: list[Module] = field(default_factory=list)     # every module seen, once
    scans: list[tuple[int, list[Module]]] = field(default_factory=list)   # (ticks, modules then)
    thread_names: dict[int, str] = field(default_factory=dict)
    options: dict[str, str] = field(default_factory=dict)

    def thread_name(self, tid: int) -> str | None:
        """A thread's name; threads still named as the process was at
        start-up have no record of their own."""
        return self.thread_names.get(tid, self.options.get("thread_name"))

    @property
    def max_depth_option(self) -> int | None:
        return None if self.max_depth >= 0x7fffffff else self.max_depth


def read_info(path: str) -> RawInfo:
    """Header and META records of a raw stream; raises TraceFormatError."""
    try:
        with open(path, "rb") as f:
            head = f.read(HEADER_SIZE)
            if len(head) < ctypes.sizeof(Header) or head[:8] != RAW_MAGIC:
                raise TraceFormatError(f"{path}: not a raw calltrace stream")
            h = Header.from_buffer_copy(head)
            info = RawInfo(path, h.chunk_size, CLOCK_NAMES.get(h.clock, "unknown"), h.pid, h.ppid,
                           h.start_ticks, h.start_mono_ns, h.start_real_ns, h.ns_per_tick, h.max_depth,
                           h.flags, h.end_state, h.exit_code, h.end_signal, h.main_tid, h.part, h.keep,
                           h.interval_calls, h.lost_calls, h.stop_reason, h.dropped_parts, h.max_size)
            if (h.version != RAW_VERSION or h.header_size != HEADER_SIZE or info.chunk_size < 4096
                    or info.chunk_size % 4096):
                raise TraceFormatError(f"{path}: unsupported or corrupt raw stream header")
            size = os.fstat(f.fileno()).st_size
            limit = min(h.next_offset, size)
            seen_modules = set()
            for off in range(HEADER_SIZE, limit, info.chunk_size):
                f.seek(off)
                ch = f.read(ctypes.sizeof(Chunk))
                if len(ch) < ctypes.sizeof(Chunk):
                    break
                chunk = Chunk.from_buffer_copy(ch)
                if chunk.magic != CHUNK_MAGIC or chunk.type != CHUNK_META:
                    continue
                f.seek(off + CHUNK_HEADER)
                _meta(info, f.read(info.chunk_size - CHUNK_HEADER), seen_modules)
    except OSError as e:
        raise TraceFormatError(f"{path}: cannot read: {e.strerror}") from None
    return info


def _meta(info: RawInfo, data: bytes, seen: set) -> None:
    pos = 0
    while pos + 8 <= len(data):
        key, length = struct.unpack_from("<II", data, pos)
        if key == 0:
            break
        body = data[pos + 8:pos + 8 + length]
        pos += 8 + ((length + 7) & ~7)
        text = body.decode("utf-8", "backslashreplace")
        # Paths are opened later: their bytes are kept (os.fsdecode), and
        # the converter shows them as text (record/convert.py `shown`).
        path = os.fsdecode(body)
        if key == META_EXE:
            info.exe = path
        elif key == META_CMDLINE:
            info.argv = text.rstrip("\0").split("\0") if text else []
        elif key == META_OUTPUT:
            info.output = path
        elif key == META_SCAN:
            try:
                info.scans.append((int(text), []))
            except ValueError:
                raise TraceFormatError(f"{info.path}: damaged module scan record {text[:60]!r}") from None
        elif key == META_MODULE:
            parts = path.split(" ", 3)
            if len(parts) == 4:
                try:
                    m = Module(int(parts[0], 16), int(parts[1], 16), int(parts[2], 16), parts[3])
                except ValueError:
                    raise TraceFormatError(f"{info.path}: damaged module record {text[:60]!r}") from None
                if info.scans:
                    info.scans[-1][1].append(m)
                if path not in seen:
                    seen.add(path)
                    info.modules.append(m)
        elif key == META_OPTION:
            name, _, value = text.partition("=")
            info.options[name] = value
        elif key == META_THREAD:
            tid, _, name = text.partition(" ")
            if tid.isdigit():
                info.thread_names[int(tid)] = name


def _library():
    return converter_library()


@dataclass
class RawFunction:
    addr: int
    calls: int
    total_ns: int
    self_ns: int
    min_ns: int
    max_ns: int
    era: int = 0     # which library loaded at addr over the run (symbols/timeline.py)

    @property
    def key(self) -> tuple[int, int]:
        return self.addr, self.era


@dataclass
class RawThread:
    tid: int
    calls: int
    first_ns: int
    main: bool


class RawStream:
    """The C walker over one raw file: analyze once, then write the threads."""

    def __init__(self, path: str, live: bool = False):
        """`live`: the program is still writing the file; step() measures
        what it has sealed so far (runtime/live.c), and the functions'
        tables are made by columns() (Parquet output only)."""
        self._lib = _library()
        err = ctypes.create_string_buffer(256)
        self._h = (self._lib.ct_live_open if live else self._lib.ct_conv_open)(os.fsencode(path), err, len(err))
        if not self._h:
            raise TraceFormatError(f"{path}: {err.value.decode(errors='replace')}")
        self.path = path
        self._progress = None

    def step(self, budget: int = 1 << 22) -> int:
        """Live: measure about `budget` more words of what the program has
        sealed; the main thread's segments measured so far, or -1 once this
        is given up (analyze() then measures it all)."""
        return self._lib.ct_live_step(self._h, budget)

    def set_tally_in_columns(self) -> None:
        """Have columns() rather than analyze() make the functions' tables
        (functions(), thread_table()): before analyze()."""
        self._lib.ct_conv_set_tally_in_columns(self._h)

    def set_progress(self, fn) -> None:
        self._progress = PROGRESS(fn)   # keep a reference while C holds it
        self._lib.ct_conv_set_progress(self._h, self._progress)

    def set_args(self, fn) -> None:
        """`fn(function_index, plan_index, payload_bytes) -> bytes` (the
        `,"args":[...]` fragment of one call, or b"")."""
        def shim(fidx, payload, value, out, cap):
            try:
                text = fn(fidx, value >> 16, ctypes.string_at(payload, value & 0xFFFF))
            except Exception as e:   # never let a decoding bug kill the conversion
                text = (',"args_note":"cannot decode arguments: %s"' % type(e).__name__).encode()
            if not text or len(text) > cap:
                return -1
            ctypes.memmove(out, text, len(text))
            return len(text)
        self._args = ARGS(shim)
        self._lib.ct_conv_set_args(self._h, self._args)

    def set_cuts(self, cuts: list[tuple[int, int, int]]) -> None:
        """(lo, hi, ticks): calls in [lo, hi) from ticks on are another
        library's (symbols/timeline.py); before analyze()."""
        flat = (ctypes.c_uint64 * max(1, 3 * len(cuts)))(*[v for c in cuts for v in c])
        if self._lib.ct_conv_set_cuts(self._h, flat, len(cuts)) < 0:
            raise MemoryError

    def keep_tables(self, rows: int) -> None:
        """Keep each thread's functions table while the tables fit `rows`
        rows in all (thread_table())."""
        self._lib.ct_conv_set_row_limit(self._h, rows)

    def thread_table(self, thread: int) -> dict[int, tuple[int, ...]] | None:
        """Thread `thread`'s (threads() order) functions table once made
        (analyze(), or columns() for that thread): function index -> (calls, total, self, min, max); None
        when the tables were not kept (keep_tables)."""
        n = self._lib.ct_conv_thread_table(self._h, thread, None, 0)
        if n < 0:
            return None
        rows = (Row * max(1, n))()
        self._lib.ct_conv_thread_table(self._h, thread, rows, n)
        return {r.func: (r.calls, r.total_ns, r.self_ns, r.min_ns, r.max_ns) for r in rows[:n]}

    def analyze(self) -> None:
        err = ctypes.create_string_buffer(256)
        if self._lib.ct_conv_analyze(self._h, err, len(err)) < 0:
            raise TraceFormatError(f"{self.path}: {err.value.decode(errors='replace')}")

    def summary(self) -> Summary:
        s = Summary()
        self._lib.ct_conv_summary(self._h, ctypes.byref(s))
        return s

    def functions(self) -> list[RawFunction]:
        out, f, i = [], Func(), 0
        while self._lib.ct_conv_function(self._h, i, ctypes.byref(f)) == 0:
            out.append(RawFunction(f.addr, f.calls, f.total_ns, f.self_ns, f.min_ns, f.max_ns, f.era))
            i += 1
        return out

    def threads(self) -> list[RawThread]:
        out, t, i = [], Thread(), 0
        while self._lib.ct_conv_thread(self._h, i, ctypes.byref(t)) == 0:
            out.append(RawThread(t.tid, t.calls, t.first_ns, bool(t.main)))
            i += 1
        return out

    def write_threads(self, fd: int, names: list[bytes], heads: list[bytes], pretty: bool,
                      notes: list[bytes | None] | None = None) -> None:
        err = ctypes.create_string_buffer(256)
        c_names = (ctypes.c_char_p * max(1, len(names)))(*names)
        c_notes = (ctypes.c_char_p * max(1, len(names)))(*(notes or [None] * len(names)))
        c_heads = (ctypes.c_char_p * max(1, len(heads)))(*heads)
        if self._lib.ct_conv_write(self._h, fd, c_names, c_notes, c_heads, int(pretty), err,
                                   len(err)) < 0:
            raise OSError(0, err.value.decode(errors="replace"))

    def columns(self, thread: int, emit, notes: list[bytes | None] | None = None,
                cap: int = 1 << 18, parent_base: int = 0) -> None:
        """Walk one thread (threads() order) into fixed-width columns and
        call `emit(cols)` per batch of at most `cap` calls, with `cols` a
        dict of numpy views valid only during the call: func, depth, start,
        dur; parent: parent_base + the parent's row in the thread, or -1;
        bits: the bitmaps (bridge COL_*) of the batch's rows, in Arrow's
        layout; roots: the rows without a parent; extra_off/extra: args
        fragments."""
        import numpy as np
        stride = (cap + 7) // 8
        bufs = {"func": np.empty(cap, np.int32), "depth": np.empty(cap, np.int32),
                "start": np.empty(cap, np.uint64), "dur": np.empty(cap, np.uint64),
                "bits": np.zeros(COL_BITMAPS * stride, np.uint8), "parent": np.empty(cap, np.int64),
                "extra_off": np.zeros(cap + 1, np.uint32), "extra": np.empty(4 << 20, np.uint8)}
        failure: list[BaseException] = []

        def shim(n):
            try:
                got = {k: v[:n] for k, v in bufs.items() if k not in ("bits", "extra_off", "extra")}
                got["bits"] = [bufs["bits"][i * stride:i * stride + (n + 7) // 8] for i in range(COL_BITMAPS)]
                got.update(extra_off=bufs["extra_off"][:n + 1], extra=bufs["extra"], roots=cols.roots)
                emit(got)
                return 0
            except BaseException as e:   # re-raised below, after C has unwound
                failure.append(e)
                return 1
        cols = Cols(*[v.ctypes.data for v in bufs.values()], cap, len(bufs["extra"]), 0, parent_base, 0, None)
        cb = BATCH(shim)
        cols.emit = ctypes.cast(cb, ctypes.c_void_p)
        n = len(notes) if notes else 0
        c_notes = (ctypes.c_char_p * max(1, n))(*(notes or []))
        err = ctypes.create_string_buffer(256)
        rc = self._lib.ct_conv_columns(self._h, thread, ctypes.byref(cols), c_notes if notes else None,
                                       err, len(err))
        if failure:
            raise failure[0]
        if rc < 0:
            raise TraceFormatError(f"{self.path}: {err.value.decode(errors='replace')}")

    def close(self) -> None:
        if self._h:
            self._lib.ct_conv_close(self._h)
            self._h = None

    def __enter__(self) -> "RawStream":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def looks_raw(path: str) -> bool:
    """Anything but a trace (Parquet, or JSON opening with '{') goes to the
    raw reader, which says what is wrong with it."""
    try:
        with open(path, "rb") as f:
            head = f.read(64)
    except OSError:
        return True
    return head[:len(RAW_MAGIC)] == RAW_MAGIC or not (head[:4] == b"PAR1" or head.lstrip()[:1] == b"{")


def has_raw_magic(path: str) -> bool:
    """The file starts as a raw stream does."""
    return starts_with(path, RAW_MAGIC)
