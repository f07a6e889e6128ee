"""Raw runtime stream -> JSON trace: symbolize, then let C stream the calls."""
from __future__ import annotations

import json
import os
import socket
from dataclasses import dataclass, field
from datetime import datetime, timezone

from .. import __version__
from ..bridge import (END_DETACH, END_EXEC, END_EXIT, END_RUNNING, END_SIGNAL, FLAG_CAPTURE_ARGS, FLAG_PRETTY, FLAG_START_OFF,
                      STOP_REASONS)
from ..errors import CalltraceError, TraceFormatError
from ..files import write_atomic
from ..symbols import Resolver
from ..symbols.timeline import cuts, stays
from ..trace.model import FunctionStats
from ..trace.writer import document_head, thread_head
from .raw import RawStream, read_info


@dataclass
class Converted:
    path: str
    metadata: dict
    functions: list[FunctionStats]
    notes: list[str] = field(default_factory=list)


def shown(s: str | None) -> str | None:
    """A path kept with its bytes (os.fsdecode) as text a trace can hold:
    bytes that are not UTF-8 as \\xNN."""
    return s if s is None else s.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


def _json_str(s: str) -> bytes:
    return json.dumps(s, ensure_ascii=False).encode("utf-8", "backslashreplace")


def part_name(output: str, part: int) -> str:
    """Rolling output: trace.json -> trace.00001.json (docs/RUNTIME.md)."""
    stem, dot, suffix = output.rpartition(".")
    if not dot or "/" in suffix:
        return f"{output}.{part:05d}"
    return f"{stem}.{part:05d}.{suffix}"


def _ending(info, exit_status, termination, signal):
    if termination is not None:
        return exit_status, termination, signal
    if info.part and info.end_state == END_RUNNING:
        return None, "running", None
    if info.end_state == END_EXIT:
        return (info.exit_code if info.exit_code >= 0 else None), "exit", None
    if info.end_state == END_SIGNAL:
        return 128 + info.end_signal, "signal", info.end_signal
    if info.end_state == END_EXEC:
        return None, "exec", None
    if info.end_state == END_DETACH:
        return None, "detached", None
    return None, "unknown", None


def _int_option(raw_path, ro: dict, key: str) -> int:
    value = ro[key]
    if not value.isascii() or not value.isdigit():
        raise TraceFormatError(f"{raw_path}: damaged option record {key}={value[:40]!r}")
    return int(value)


def convert(raw_path: str, output: str | None = None, *, exit_status: int | None = None,
            termination: str | None = None, signal: int | None = None, pretty: bool | None = None,
            progress: bool = False, options: dict | None = None, scratch: str | None = None,
            notes: list[str] | None = None, extra: dict | None = None,
            stream: RawStream | None = None) -> Converted:
    """Write the JSON trace for one raw stream and return its metadata and
    per-function table. `exit_status`/`termination`/`signal` come from the
    parent process when it saw the program end (calltrace run); `scratch` is
    where the trace is written before it is moved to `output`; `notes` and
    `extra` (metadata keys) come from the caller too (calltrace attach).
    `stream`: the file opened already, measured in part while the program
    ran (record/live.py); it is closed here."""
    caller_notes = list(notes or [])
    try:
        info = read_info(raw_path)
    except BaseException:
        if stream is not None:
            stream.close()
        raise
    output = output or info.output or "calltrace.json"
    if info.part:
        output = part_name(output, info.part)
    pretty = bool(info.flags & FLAG_PRETTY) if pretty is None else pretty
    parquet = output.endswith((".parquet", ".pq"))
    if stream is not None and not parquet:
        stream.close()      # JSON needs the tables before the calls: not made live
        stream = None
    with stream or RawStream(raw_path) as raw:
        bar = None
        second_pass = [0]
        if progress:
            from tqdm import tqdm
            # Shown only when converting takes more than a second.
            bar = tqdm(desc="calltrace: converting", unit=" events", unit_scale=True, delay=1.0,
                       leave=False, dynamic_ncols=True)

            def tick(done, total):
                bar.total = 2 * total
                bar.n = second_pass[0] * total + done
                bar.refresh()
            raw.set_progress(tick)
        timeline = stays(info.scans)
        raw.set_cuts(cuts(timeline))
        if parquet:
            from ..trace.index import MAX_ROWS
            # The tables go in the footer: the writing pass makes them.
            raw.set_tally_in_columns()
            raw.keep_tables(MAX_ROWS)    # the footer index's
        raw.analyze()
        summary = raw.summary()
        funcs = raw.functions()
        threads = raw.threads()
        resolver = Resolver(info.modules, timeline)
        infos = resolver.resolve([f.key for f in funcs])

        def function_stats(funcs) -> list[FunctionStats]:
            stats = []
            for f in funcs:
                fi = infos[f.key]
                stats.append(FunctionStats(shown(fi.function), f.calls, f.total_ns, f.self_ns, f.min_ns,
                                           f.max_ns, f"0x{f.addr:x}", shown(fi.module), fi.file, fi.line,
                                           fi.symbol))
            stats.sort(key=lambda s: (-s.self_ns, s.function))
            return stats
        # Parquet: the writing pass makes the tables (functions() below).
        stats = [] if parquet else function_stats(funcs)
        status, term, sig = _ending(info, exit_status, termination, signal)
        notes = [shown(n) for n in resolver.notes] + caller_notes
        if summary.lost or info.stop_reason:
            why = STOP_REASONS.get(info.stop_reason, "the raw trace could not grow")
            notes.append(f"recording stopped early: {why}; {summary.lost} calls after that were not "
                         "recorded (counted in dropped_events)")
        if info.dropped_parts:
            notes.append(f"{info.dropped_parts} earlier parts were deleted unconverted: the program "
                         "made parts faster than they could be converted")
        if "argv_bytes" in info.options:
            notes.append(f"argv is cut: the command line has {_int_option(raw_path, info.options, 'argv_bytes')} "
                         "bytes and only its start was recorded (the last argument may be cut short)")
        if summary.unmatched:
            notes.append(f"{summary.unmatched} returns without a recorded call were ignored "
                         "(calls entered before recording started)")
        opts = {"max_depth": info.max_depth_option,
                "capture_args": bool(info.flags & FLAG_CAPTURE_ARGS),
                "pretty": pretty, "start": "off" if info.flags & FLAG_START_OFF else "on",
                "buffer_kb": info.chunk_size // 1024}
        if info.max_size:
            opts["max_size"] = info.max_size
        ro = info.options
        for k in ("threshold_ns", "toggle_signal"):
            if ro.get(k, "0") != "0":
                opts[k] = _int_option(raw_path, ro, k)
        for k in ("function", "only", "exclude"):
            if k in ro:
                opts[k] = ro[k]
        opts.update(options or {})
        metadata = {
            "total_calls": summary.total_calls,
            "program": shown(info.exe),
            "argv": info.argv,
            "pid": info.pid,
            "parent_pid": info.ppid or None,
            "exit_status": status,
            "termination": term,
            "signal": sig,
            "backend": "runtime",
            "start_time": datetime.fromtimestamp(info.start_real_ns / 1e9, timezone.utc)
                                  .astimezone().isoformat(timespec="microseconds"),
            "duration_ns": summary.duration_ns,
            "clock": info.clock,
            "options": opts,
            "thread_count": summary.threads,
            "incomplete_calls": summary.incomplete,
            "unwound_calls": summary.unwound,
            "depth_limited_calls": summary.depth_limited,
            "dropped_events": summary.dropped,
            "filtered_calls": summary.filtered,
            "calltrace_version": __version__,
            "hostname": socket.gethostname(),
        }
        metadata.update(extra or {})
        if info.part:
            metadata["part"] = {"index": info.part, "interval_calls": info.interval_calls,
                                "keep": info.keep or None}
        if notes:
            metadata["notes"] = notes
        names = [_json_str(shown(infos[f.key].function)) for f in funcs]
        arg_notes = None
        if info.flags & FLAG_CAPTURE_ARGS:
            arg_notes = _capture_args(raw, info, funcs, infos, notes, metadata)
        heads = [thread_head(t.tid, info.thread_name(t.tid), t.main).encode()
                 for t in threads]
        second_pass[0] = 1
        if parquet:
            import pyarrow as pa
            from ..trace import columns
            header = columns.header_doc(metadata, [])
            listed = [(t.tid, info.thread_name(t.tid), t.main) for t in threads]

            def functions() -> list[dict]:
                stats[:] = function_stats(raw.functions())
                return [s.to_json() for s in stats]
            write_atomic(output, lambda f: columns.write_raw(
                pa.PythonFile(f, mode="w"), raw, header, [shown(infos[f.key].function) for f in funcs],
                listed, arg_notes, raw.thread_table, functions), "trace", scratch=scratch)
        else:
            write_atomic(output, lambda f: (
                f.write(document_head(metadata, stats, pretty).encode("utf-8", "backslashreplace")),
                raw.write_threads(f.fileno(), names, heads, pretty, arg_notes)), "trace", scratch=scratch)
        if bar is not None:
            bar.close()
    if info.part and info.keep:
        _enforce_keep(output_base(output, info.part), info.keep)
    return Converted(output, metadata, stats, notes)


def output_base(named: str, part: int) -> str:
    return named.replace(f".{part:05d}", "", 1)


def _enforce_keep(base: str, keep: int) -> None:
    """Delete parts older than the newest `keep`. Parts may be converted at
    the same time by several processes: each one sweeps them all."""
    import glob
    import re
    pattern = re.compile(re.escape(part_name(base, 0)).replace("00000", r"(\d{5})") + "$")
    found = {}
    for path in glob.glob(part_name(glob.escape(base), 0).replace("00000", "[0-9]" * 5)):
        m = pattern.match(path)
        if m:
            found[int(m.group(1))] = path
    if found:
        newest = max(found)
        for index, path in found.items():
            if index <= newest - keep:
                try:
                    os.unlink(path)
                except FileNotFoundError:
                    pass


def _plan_paths(info) -> list[str]:
    """The plan's modules, in the order the runtime recorded them."""
    mods = {}
    for k, v in info.options.items():
        if k.startswith("capture_module.") and k[15:].isdigit():
            mods[int(k[15:])] = v
    if not mods or sorted(mods) != list(range(len(mods))):
        return [info.exe]
    return [mods[i] for i in range(len(mods))]


def _capture_args(raw, info, funcs, infos, notes, metadata) -> list[bytes | None]:
    """Wire the argument decoder into the C walk; returns per-function notes."""
    from ..symbols.plan import ProgramPlan, capture_plan
    from .args import ArgsDecoder
    paths = _plan_paths(info)
    plan = ProgramPlan([capture_plan(p) for p in paths])
    if not plan.modules[0].has_dwarf:
        notes.append(f"{shown(info.exe)} has no DWARF debug info (build with -g): arguments not captured")
        metadata["notes"] = notes
    real = {}
    for m in info.modules:
        real.setdefault(os.path.realpath(m.path), m)
    loaded = [real.get(os.path.realpath(p)) for p in paths]
    exe = loaded[0]
    by_addr = {f.addr: infos[f.key].function for f in funcs}

    def symbolize(addr: int) -> str | None:
        name = by_addr.get(addr)
        if name is None and exe is not None:
            from ..symbols.elf import elf_symbols
            s = elf_symbols(exe.path).lookup(addr - exe.bias)
            name = s.name if s is not None and s.start == addr - exe.bias else None
        return name

    decoder = ArgsDecoder(plan, loaded, [f.addr for f in funcs], symbolize)
    raw.set_args(decoder)
    return decoder.notes()


def transcode(src: str, output: str | None, pretty: bool | None):
    """Write `src` in the other encoding (or the one `output`'s suffix
    names); returns the path and the trace read (its warnings). A truncated
    trace is written as far as it goes, with a note saying so."""
    from ..trace import columns
    from ..trace.reader import load
    from ..trace.writer import write_trace
    from ..files import write_atomic
    import pyarrow as pa
    trace = load(src)
    if output is None:
        stem = src.rsplit(".", 1)[0] if "." in os.path.basename(src) else src
        output = stem + (".json" if columns.is_parquet_file(src) else ".parquet")
    if os.path.exists(output) and os.path.samefile(output, src):
        raise CalltraceError(f"{output}: would overwrite the trace itself")
    trace.copied_note()
    if columns.is_parquet_name(output):
        write_atomic(output, lambda f: columns.write_trace(pa.PythonFile(f, mode="w"), trace), "trace")
    else:
        write_trace(output, trace.metadata, trace.functions, trace.threads, bool(pretty))
    return output, trace
