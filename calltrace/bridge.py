"""The one bridge between Python and the C runtime: every binary layout the
two sides share, defined once here.

- the raw stream the recorder writes (runtime/ct.h: struct ct_header,
  struct ct_chunk, struct ct_seg), read by record/raw.py;
- the converter's ctypes API (runtime/conv.h: struct ct_conv_summary,
  ct_conv_func, ct_conv_thread, ct_conv_row, ct_conv_cols and the ct_conv_*
  and ct_live_* functions),
  and the post-mortem kernels' (runtime/kernels.c, format.c, perfetto.c,
  tree.c, events.c, jsonl.c; struct ct_fmt, struct ct_pf);
- the files Python hands the runtime: the capture plan (runtime/capture.c:
  struct plan_func, plan_op; written by symbols/plan.py) and the record-time
  filter (runtime/filter.c; written by write_filter below).

Each C struct is mirrored by a ctypes.Structure with the same field names;
STRUCTS says which C file declares it. tests/test_bridge.py compiles
_Static_asserts generated from these definitions against the C sources, so
the build of the test fails when either side changes alone. The rest of the
bridge is environment variables (docs/RUNTIME.md) and the runtime running
`python -m calltrace convert|plan|filter` (runtime/spawn.c)."""
from __future__ import annotations

import ctypes
import os
import struct

from .errors import CalltraceError

u8, u16, u32, u64 = ctypes.c_uint8, ctypes.c_uint16, ctypes.c_uint32, ctypes.c_uint64
i32, i64 = ctypes.c_int32, ctypes.c_int64

# ---- the raw stream (runtime/ct.h) ----------------------------------------
RAW_MAGIC = b"CTRAW02\0"
RAW_VERSION = 2
HEADER_SIZE = 4096
CHUNK_HEADER = 64
CHUNK_MAGIC = 0x48435443
SEG_HEADER = 24
SEG_MAGIC = 0x47535443
SEG_FIRST, SEG_SEALED, SEG_ENDED = 1, 2, 4
# Why recording stopped before the program ended (ct.h CT_STOP_*).
STOP_FSIZE, STOP_DISK_FULL, STOP_MAX_SIZE, STOP_MIN_FREE, STOP_ERROR = 1, 2, 3, 4, 5
STOP_REASONS = {STOP_FSIZE: "the raw trace reached the file size limit (ulimit -f)",
                STOP_DISK_FULL: "the file system was full",
                STOP_MAX_SIZE: "the raw trace reached its size budget (--max-size / CALLTRACE_MAX_SIZE)",
                STOP_MIN_FREE: "the file system was nearly full (CALLTRACE_MIN_FREE)",
                STOP_ERROR: "the raw trace could not grow"}
CHUNK_EVENTS, CHUNK_META = 1, 2
META_EXE, META_CMDLINE, META_MODULE, META_THREAD, META_OUTPUT, META_OPTION, META_SCAN = 1, 2, 3, 4, 5, 6, 7
CLOCK_NAMES = {0: "tsc", 1: "monotonic"}
END_RUNNING, END_EXIT, END_SIGNAL, END_EXEC, END_DETACH = 0, 1, 2, 3, 4
FLAG_CAPTURE_ARGS, FLAG_PRETTY, FLAG_START_OFF, FLAG_BARE = 1, 2, 4, 8


class Header(ctypes.Structure):
    _fields_ = [("magic", ctypes.c_char * 8), ("version", u32), ("header_size", u32),
                ("chunk_size", u32), ("clock", u32), ("pid", i32), ("ppid", i32),
                ("start_ticks", u64), ("start_mono_ns", u64), ("start_real_ns", u64),
                ("ns_per_tick", ctypes.c_double), ("max_depth", u32), ("flags", u32),
                ("next_offset", u64), ("end_state", u32), ("exit_code", i32), ("end_signal", i32),
                ("main_tid", i32), ("end_ticks", u64), ("end_mono_ns", u64), ("part", u32),
                ("keep", u32), ("interval_calls", u64), ("lost_calls", u64), ("stop_reason", u32),
                ("dropped_parts", u32), ("max_size", u64)]


class Chunk(ctypes.Structure):
    _fields_ = [("magic", u32), ("type", u32), ("lost", u64), ("offset", u64),
                ("ticks", u64), ("mono_ns", u64), ("depth_limited", u64), ("dropped", u64),
                ("filtered", u64)]


class Seg(ctypes.Structure):
    _fields_ = [("magic", u32), ("flags", u32), ("tid", i32), ("words", u32), ("ticks", u64)]


# ---- the converter's API (runtime/conv.h) ---------------------------------
class Summary(ctypes.Structure):
    _fields_ = [(n, u64) for n in (
        "total_calls", "threads", "functions", "incomplete", "unwound", "unmatched",
        "depth_limited", "dropped", "duration_ns", "end_ns")] + [("ns_per_tick", ctypes.c_double),
                                                                 ("filtered", u64), ("lost", u64), ("before_attach", u64)]


class Func(ctypes.Structure):
    # era: how many times the code at addr changed (a library loaded where a
    # dlclose'd one was) before these calls; see ct_conv_set_cuts
    _fields_ = [(n, u64) for n in ("addr", "calls", "total_ns", "self_ns", "min_ns", "max_ns", "era")]


class Thread(ctypes.Structure):
    _fields_ = [("tid", i64), ("calls", u64), ("first_ns", u64), ("main", i64)]


class Row(ctypes.Structure):
    """A row of a thread's functions table, by function index (ct_conv_thread_table)."""
    _fields_ = [("func", i64)] + [(n, u64) for n in ("calls", "total_ns", "self_ns", "min_ns", "max_ns")]


class Cols(ctypes.Structure):
    """Column batches of the converter's walk (ct_conv_columns)."""
    _fields_ = [(n, ctypes.c_void_p) for n in ("func", "depth", "start", "dur", "bits", "parent",
                                               "extra_off", "extra")] + \
               [(n, u64) for n in ("cap", "extra_cap", "n")] + [("parent_base", i64), ("roots", u64),
                                                                ("emit", ctypes.c_void_p)]


# Cols.bits: its bitmaps (conv.h COL_*), each (cap + 7) // 8 bytes.
COL_HAS_PARENT, COL_INCOMPLETE, COL_UNWOUND, COL_BEFORE, COL_BITMAPS = 0, 1, 2, 3, 4


# ---- the post-mortem kernels (runtime/kernels.c, format.c, perfetto.c) -----
class Fmt(ctypes.Structure):
    _fields_ = [("mode", i32), ("colour", i32), ("max_depth", i64), ("min_ns", i64),
                ("want", ctypes.c_void_p), ("exclude", ctypes.c_void_p), ("names", ctypes.c_void_p),
                ("namelen", ctypes.c_void_p), ("skip", i64), ("root", i64), ("shown", u64)]


class Pf(ctypes.Structure):
    """The perfetto kernel's wire tags (from Perfetto's descriptors) and one
    packet sequence's state (runtime/perfetto.c)."""
    _fields_ = [(n, u32) for n in ("packet", "timestamp", "seq_id", "seq_flags", "track_event",
                                   "interned_data", "type", "name_iid", "event_names", "iid", "name",
                                   "begin", "end", "needs", "seq")] + \
               [(n, ctypes.c_void_p) for n in ("blob", "off", "interned", "ends")] + \
               [("sp", u64), ("cap", u64), ("last", i64), ("pending", i64)]


PROGRESS = ctypes.CFUNCTYPE(None, u64, u64)
ARGS = ctypes.CFUNCTYPE(ctypes.c_int, u32, ctypes.POINTER(u8), u64, ctypes.c_void_p, u32)
BATCH = ctypes.CFUNCTYPE(ctypes.c_int, u64)


def bind_converter(lib: ctypes.CDLL) -> ctypes.CDLL:
    """Declare the ct_conv_* functions of libcalltrace-convert.so."""
    p, s, c = ctypes.c_void_p, ctypes.c_size_t, ctypes.c_char_p
    lib.ct_conv_open.restype = p
    lib.ct_conv_open.argtypes = [c, c, s]
    lib.ct_conv_close.argtypes = [p]
    lib.ct_conv_set_progress.argtypes = [p, PROGRESS]
    lib.ct_conv_analyze.argtypes = [p, c, s]
    lib.ct_conv_summary.argtypes = [p, ctypes.POINTER(Summary)]
    lib.ct_conv_function.argtypes = [p, s, ctypes.POINTER(Func)]
    lib.ct_conv_thread.argtypes = [p, s, ctypes.POINTER(Thread)]
    lib.ct_conv_set_row_limit.argtypes = [p, s]
    lib.ct_conv_set_tally_in_columns.argtypes = [p]
    lib.ct_live_open.restype = p
    lib.ct_live_open.argtypes = [c, c, s]
    lib.ct_live_step.argtypes = [p, u64]
    lib.ct_live_step.restype = i64
    lib.ct_conv_thread_table.restype = i64
    lib.ct_conv_thread_table.argtypes = [p, s, ctypes.POINTER(Row), s]
    lib.ct_conv_set_args.argtypes = [p, ARGS]
    lib.ct_conv_set_cuts.argtypes = [p, ctypes.POINTER(u64), s]
    lib.ct_conv_write.argtypes = [p, ctypes.c_int, ctypes.POINTER(c), ctypes.POINTER(c),
                                  ctypes.POINTER(c), ctypes.c_int, c, s]
    lib.ct_conv_columns.argtypes = [p, s, ctypes.POINTER(Cols), ctypes.POINTER(c), c, s]
    # kernels: arrays are passed as addresses (numpy's .ctypes.data)
    lib.ct_stats_new.restype = p
    lib.ct_stats_free.argtypes = [p]
    lib.ct_stats_feed.argtypes = [p, s, p, p, p, s]
    lib.ct_stats_finish.argtypes = [p, p, s]
    lib.ct_stats_finish.restype = s
    lib.ct_slowest_new.argtypes = [s]
    lib.ct_slowest_new.restype = p
    lib.ct_slowest_free.argtypes = [p]
    lib.ct_slowest_feed.argtypes = [p, i32, u64, p, p, p, p, s]
    lib.ct_slowest_get.argtypes = [p, s, p, p, s]
    lib.ct_fmt_rows.argtypes = [ctypes.POINTER(Fmt), p, p, p, p, p, p, s, s, p, s, ctypes.POINTER(s),
                                ctypes.POINTER(i32), ctypes.POINTER(i64)]
    lib.ct_fmt_rows.restype = s
    lib.ct_pf_rows.argtypes = [ctypes.POINTER(Fmt), ctypes.POINTER(Pf), p, p, p, p, s, s, p, s,
                               ctypes.POINTER(s)]
    lib.ct_pf_rows.restype = s
    lib.ct_pf_finish.argtypes = [ctypes.POINTER(Pf), p, s, ctypes.POINTER(s)]
    # the call tree (tree.c) and the speedscope/html kernels (events.c): opaque handles
    fmt = ctypes.POINTER(Fmt)
    lib.ct_tree_new.restype = p
    lib.ct_tree_free.argtypes = [p]
    lib.ct_tree_thread.argtypes = [p]
    lib.ct_tree_feed.argtypes = [p, fmt, p, p, p, s]
    lib.ct_tree_nodes.argtypes = [p, p, p, p, p, s]
    lib.ct_tree_nodes.restype = s
    lib.ct_ev_new.argtypes = [p, s, i32]
    lib.ct_ev_new.restype = p
    lib.ct_ev_free.argtypes = [p]
    lib.ct_ev_thread.argtypes = [p, p]
    lib.ct_ev_lut.argtypes = [p, p, s]
    lib.ct_ev_lut.restype = s
    lib.ct_ss_rows.argtypes = [p, fmt, p, p, p, p, s, s, p, s, ctypes.POINTER(s)]
    lib.ct_ss_rows.restype = s
    lib.ct_ss_finish.argtypes = [p, p, s, ctypes.POINTER(s)]
    lib.ct_html_hist.argtypes = [fmt, p, p, p, s, p]
    lib.ct_html_budget.argtypes = [p, i64, i64, i64]
    lib.ct_html_rows.argtypes = [p, fmt, p, p, p, p, p, s, s, p, s, ctypes.POINTER(s), ctypes.POINTER(i64)]
    lib.ct_html_rows.restype = s
    # JSON call lines as columns (jsonl.c)
    lib.ct_jl_new.restype = p
    lib.ct_jl_free.argtypes = [p]
    lib.ct_jl_name.argtypes = [p, c, s, i32]
    lib.ct_jl_parse.argtypes = [p, c, s, ctypes.POINTER(s), ctypes.POINTER(s), p, p, p, p, p, s,
                                ctypes.POINTER(s), ctypes.POINTER(s)]
    return lib


# ---- the capture plan (runtime/capture.c) ---------------------------------
PLAN_MAGIC = b"CTPLAN02"
PLAN_HEAD = struct.Struct("<8sIIII")     # magic, version 2, functions, ops, modules


class PlanFunc(ctypes.Structure):
    _fields_ = [("origin", u64), ("ret_vaddr", u64), ("cfa_off", i32), ("cfa_base", u8),
                ("module", u8), ("nops", u16), ("first_op", u32), ("max_payload", u32)]


class PlanOp(ctypes.Structure):
    _fields_ = [("kind", u8), ("base", u8), ("size", u16), ("off", i32)]


# ---- the record-time filter (runtime/filter.c) ----------------------------
FILTER_MAGIC = b"CTFILT03"
FILTER_SUBTREE, FILTER_ONLY, FILTER_EXCLUDE = 1, 2, 4   # ct.h CT_FILTER_*


def write_filter(path: str, mode: int, modules: list[tuple[str, list[int], list[int]]]) -> None:
    """The filter file: `modules` are (path, included, excluded) entry
    addresses at link time, the executable first."""
    parts = [FILTER_MAGIC, struct.pack("<II", mode, len(modules))]
    for name, inc, exc in modules:
        raw = os.fsencode(name)
        parts.append(struct.pack("<I", len(raw)) + raw + struct.pack("<II", len(inc), len(exc)))
        parts.append(struct.pack(f"<{len(inc) + len(exc)}Q", *inc, *exc))
    try:
        with open(path, "wb") as f:
            f.write(b"".join(parts))
    except OSError as e:
        raise CalltraceError(f"cannot write {path}: {e.strerror}") from None


# The C declaration of each mirrored struct: (C name, file that declares it).
STRUCTS = {Header: ("struct ct_header", "ct.h"), Chunk: ("struct ct_chunk", "ct.h"), Seg: ("struct ct_seg", "ct.h"),
           Summary: ("struct ct_conv_summary", "conv.h"), Func: ("struct ct_conv_func", "conv.h"),
           Thread: ("struct ct_conv_thread", "conv.h"), Row: ("struct ct_conv_row", "conv.h"), Cols: ("struct ct_conv_cols", "conv.h"),
           Fmt: ("struct ct_fmt", "conv.h"), Pf: ("struct ct_pf", "conv.h"), PlanFunc: ("struct plan_func", "capture.c"),
           PlanOp: ("struct plan_op", "capture.c")}
# Constants both sides spell: Python value, C expression.
CONSTANTS = [(RAW_VERSION, "CT_VERSION"), (HEADER_SIZE, "CT_HEADER_SIZE"), (CHUNK_HEADER, "CT_CHUNK_HEADER"),
             (CHUNK_MAGIC, "CT_CHUNK_MAGIC"), (SEG_HEADER, "CT_SEG_HEADER"), (SEG_MAGIC, "CT_SEG_MAGIC"),
             (SEG_FIRST, "CT_SEG_FIRST"), (SEG_SEALED, "CT_SEG_SEALED"), (SEG_ENDED, "CT_SEG_ENDED"),
             (STOP_FSIZE, "CT_STOP_FSIZE"), (STOP_DISK_FULL, "CT_STOP_DISK_FULL"),
             (STOP_MAX_SIZE, "CT_STOP_MAX_SIZE"), (STOP_MIN_FREE, "CT_STOP_MIN_FREE"), (STOP_ERROR, "CT_STOP_ERROR"), (CHUNK_EVENTS, "CT_CHUNK_EVENTS"), (CHUNK_META, "CT_CHUNK_META"),
             (META_EXE, "CT_META_EXE"), (META_CMDLINE, "CT_META_CMDLINE"), (META_MODULE, "CT_META_MODULE"),
             (META_THREAD, "CT_META_THREAD"), (META_OUTPUT, "CT_META_OUTPUT"), (META_OPTION, "CT_META_OPTION"),
             (META_SCAN, "CT_META_SCAN"),
             (END_RUNNING, "CT_END_RUNNING"), (END_EXIT, "CT_END_EXIT"), (END_SIGNAL, "CT_END_SIGNAL"),
             (END_EXEC, "CT_END_EXEC"), (END_DETACH, "CT_END_DETACH"), (FLAG_CAPTURE_ARGS, "CT_FLAG_CAPTURE_ARGS"),
             (FLAG_PRETTY, "CT_FLAG_PRETTY"), (FLAG_START_OFF, "CT_FLAG_START_OFF"), (FLAG_BARE, "CT_FLAG_BARE"),
             (FILTER_SUBTREE, "CT_FILTER_SUBTREE"), (FILTER_ONLY, "CT_FILTER_ONLY"),
             (FILTER_EXCLUDE, "CT_FILTER_EXCLUDE"), (0, "CT_CLOCK_TSC"), (1, "CT_CLOCK_MONOTONIC"),
             (COL_HAS_PARENT, "COL_HAS_PARENT"), (COL_INCOMPLETE, "COL_INCOMPLETE"),
             (COL_UNWOUND, "COL_UNWOUND"), (COL_BEFORE, "COL_BEFORE"), (COL_BITMAPS, "COL_BITMAPS")]


def static_asserts() -> str:
    """C _Static_asserts that hold when the C side agrees with this module."""
    out = []
    for cls, (cname, _) in STRUCTS.items():
        out.append(f'_Static_assert(sizeof({cname}) == {ctypes.sizeof(cls)}, "sizeof {cname}");')
        for name, _type in cls._fields_:
            off = getattr(cls, name).offset
            size = getattr(cls, name).size
            out.append(f'_Static_assert(offsetof({cname}, {name}) == {off}, "{cname}.{name} offset");')
            out.append(f'_Static_assert(sizeof((({cname} *)0)->{name}) == {size}, "{cname}.{name} size");')
    for value, expr in CONSTANTS:
        out.append(f'_Static_assert(({expr}) == {value}u, "{expr}");')
    out.append(f'_Static_assert(sizeof(CT_MAGIC) == {len(RAW_MAGIC)}, "CT_MAGIC");')
    return "\n".join(out) + "\n"
