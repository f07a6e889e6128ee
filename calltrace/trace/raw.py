"""The raw stream the runtime writes (docs/FORMAT.md, "The raw stream").

Python reads the header and the META records (program, argv, modules,
thread names); the event words are walked in C by libcalltrace-convert.so,
bound here with ctypes. Layouts mirror runtime/ct.h."""
from __future__ import annotations

import ctypes
import os
import struct
from dataclasses import dataclass, field

from ..errors import TraceFormatError
from ..runtime import converter_path

MAGIC = b"CTRAW01\0"
HEADER_SIZE = 4096
_HEADER = struct.Struct("<8sIIIIiiQQQdIIQIiiiQQIIQQ")
_CHUNK = struct.Struct("<IIiIQQQQQQ")
CHUNK_MAGIC = 0x48435443
CHUNK_EVENTS, CHUNK_META = 1, 2
META_EXE, META_CMDLINE, META_MODULE, META_THREAD, META_OUTPUT, META_OPTION = 1, 2, 3, 4, 5, 6
CLOCK_NAMES = {0: "tsc", 1: "monotonic"}
END_RUNNING, END_EXIT, END_SIGNAL, END_EXEC, END_DETACH = 0, 1, 2, 3, 4
FLAG_CAPTURE_ARGS, FLAG_PRETTY, FLAG_START_OFF, FLAG_BARE = 1, 2, 4, 8


@dataclass(frozen=True)
class Module:
    bias: int
    lo: int
    hi: int
    path: str


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
    lost_calls: int = 0         # not recorded after the raw file could not grow
    exe: str = ""
    argv: list[str] = field(default_factory=list)
    output: str = ""
    modules: list[Module] = field(default_factory=list)
    thread_names: dict[int, str] = field(default_factory=dict)
    options: dict[str, str] = field(default_factory=dict)

    @property
    def max_depth_option(self) -> int | None:
        return None if self.max_depth >= 0x7fffffff else self.max_depth


def read_info(path: str) -> RawInfo:
    """Header and META records of a raw stream; raises TraceFormatError."""
    try:
        with open(path, "rb") as f:
            head = f.read(HEADER_SIZE)
            if len(head) < _HEADER.size or head[:8] != MAGIC:
                raise TraceFormatError(f"{path}: not a raw calltrace stream")
            h = _HEADER.unpack_from(head)
            info = RawInfo(path, h[3], CLOCK_NAMES.get(h[4], "unknown"), h[5], h[6], h[7], h[8],
                           h[9], h[10], h[11], h[12], h[14], h[15], h[16], h[17], h[20], h[21], h[22], h[23])
            if h[1] != 1 or h[2] != HEADER_SIZE or info.chunk_size < 4096 or info.chunk_size % 4096:
                raise TraceFormatError(f"{path}: unsupported or corrupt raw stream header")
            size = os.fstat(f.fileno()).st_size
            limit = min(h[13], size)
            seen_modules = set()
            for off in range(HEADER_SIZE, limit, info.chunk_size):
                f.seek(off)
                ch = f.read(_CHUNK.size)
                if len(ch) < _CHUNK.size:
                    break
                magic, kind = struct.unpack_from("<II", ch)
                if magic != CHUNK_MAGIC or kind != CHUNK_META:
                    continue
                f.seek(off + 64)
                _meta(info, f.read(info.chunk_size - 64), seen_modules)
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
        if key == META_EXE:
            info.exe = text
        elif key == META_CMDLINE:
            info.argv = text.rstrip("\0").split("\0") if text else []
        elif key == META_OUTPUT:
            info.output = text
        elif key == META_MODULE:
            parts = text.split(" ", 3)
            if len(parts) == 4 and text not in seen:
                seen.add(text)
                try:
                    info.modules.append(Module(int(parts[0], 16), int(parts[1], 16),
                                               int(parts[2], 16), parts[3]))
                except ValueError:
                    raise TraceFormatError(f"{info.path}: damaged module record {text[:60]!r}") from None
        elif key == META_OPTION:
            name, _, value = text.partition("=")
            info.options[name] = value
        elif key == META_THREAD:
            tid, _, name = text.partition(" ")
            if tid.isdigit():
                info.thread_names[int(tid)] = name


class _Summary(ctypes.Structure):
    _fields_ = [(n, ctypes.c_uint64) for n in (
        "total_calls", "threads", "functions", "incomplete", "unwound", "unmatched",
        "depth_limited", "dropped", "duration_ns", "end_ns")] + [("ns_per_tick", ctypes.c_double),
                                                                 ("filtered", ctypes.c_uint64),
                                                                 ("before_attach", ctypes.c_uint64)]


class _Func(ctypes.Structure):
    _fields_ = [(n, ctypes.c_uint64) for n in
                ("addr", "calls", "total_ns", "self_ns", "min_ns", "max_ns")]


class _Thread(ctypes.Structure):
    _fields_ = [("tid", ctypes.c_int64), ("calls", ctypes.c_uint64),
                ("first_ns", ctypes.c_uint64), ("main", ctypes.c_int64)]


PROGRESS = ctypes.CFUNCTYPE(None, ctypes.c_uint64, ctypes.c_uint64)
ARGS = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.c_uint32, ctypes.POINTER(ctypes.c_uint8), ctypes.c_uint64,
                        ctypes.c_void_p, ctypes.c_uint32)
_lib = None


def _library():
    global _lib
    if _lib is None:
        lib = ctypes.CDLL(converter_path())
        lib.ct_conv_open.restype = ctypes.c_void_p
        lib.ct_conv_open.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_size_t]
        lib.ct_conv_close.argtypes = [ctypes.c_void_p]
        lib.ct_conv_set_progress.argtypes = [ctypes.c_void_p, PROGRESS]
        lib.ct_conv_analyze.argtypes = [ctypes.c_void_p, ctypes.c_char_p, ctypes.c_size_t]
        lib.ct_conv_summary.argtypes = [ctypes.c_void_p, ctypes.POINTER(_Summary)]
        lib.ct_conv_function.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.POINTER(_Func)]
        lib.ct_conv_thread.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.POINTER(_Thread)]
        lib.ct_conv_set_args.argtypes = [ctypes.c_void_p, ARGS]
        lib.ct_conv_write.argtypes = [ctypes.c_void_p, ctypes.c_int, ctypes.POINTER(ctypes.c_char_p),
                                      ctypes.POINTER(ctypes.c_char_p), ctypes.POINTER(ctypes.c_char_p),
                                      ctypes.c_int, ctypes.c_char_p, ctypes.c_size_t]
        _lib = lib
    return _lib


@dataclass
class RawFunction:
    addr: int
    calls: int
    total_ns: int
    self_ns: int
    min_ns: int
    max_ns: int


@dataclass
class RawThread:
    tid: int
    calls: int
    first_ns: int
    main: bool


class RawStream:
    """The C walker over one raw file: analyze once, then write the threads."""

    def __init__(self, path: str):
        self._lib = _library()
        err = ctypes.create_string_buffer(256)
        self._h = self._lib.ct_conv_open(os.fsencode(path), err, len(err))
        if not self._h:
            raise TraceFormatError(f"{path}: {err.value.decode(errors='replace')}")
        self.path = path
        self._progress = None

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

    def analyze(self) -> None:
        err = ctypes.create_string_buffer(256)
        if self._lib.ct_conv_analyze(self._h, err, len(err)) < 0:
            raise TraceFormatError(f"{self.path}: {err.value.decode(errors='replace')}")

    def summary(self) -> _Summary:
        s = _Summary()
        self._lib.ct_conv_summary(self._h, ctypes.byref(s))
        return s

    def functions(self) -> list[RawFunction]:
        out, f, i = [], _Func(), 0
        while self._lib.ct_conv_function(self._h, i, ctypes.byref(f)) == 0:
            out.append(RawFunction(f.addr, f.calls, f.total_ns, f.self_ns, f.min_ns, f.max_ns))
            i += 1
        return out

    def threads(self) -> list[RawThread]:
        out, t, i = [], _Thread(), 0
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

    def close(self) -> None:
        if self._h:
            self._lib.ct_conv_close(self._h)
            self._h = None

    def __enter__(self) -> "RawStream":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
