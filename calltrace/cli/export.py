"""``calltrace export``: write a trace in another tool's format."""
from __future__ import annotations

import os
import shutil
import sys
import tempfile

from ..trace.parts import load_any
from ..analysis.paths import Filter
from ..analysis.progress import reading, warn
from ..analysis.view import Budget, pick_threads, view
from ..errors import CalltraceError
from ..files import write_atomic
from ..record.raw import has_raw_magic
from ..export import FORMATS, TIMELINE, Options, module
from .options import add_filters, at_least, make_filter

NAME = "export"
HELP = "convert a trace: chrome, perfetto, speedscope, folded, svg, html or parquet"
MAX_EVENTS = 5_000_000
DESCRIPTION = f"""Write a trace in another format:
  chrome      Trace Event Format JSON: open in https://ui.perfetto.dev or chrome://tracing
  perfetto    Perfetto's native protobuf trace (TrackEvent slices, interned names):
              far smaller than chrome JSON; ui.perfetto.dev and trace_processor
  speedscope  speedscope's JSON (https://www.speedscope.app)
  folded      collapsed stacks, one line per call path with its self time in ns,
              for flamegraph.pl, inferno-flamegraph and the like
  svg         a flame graph drawn by calltrace (all threads merged)
  html        one self-contained page (no network access): a zoomable timeline
              per thread, search, and a sortable function table
  parquet     the trace itself in its Parquet encoding (docs/FORMAT.md)

The input is a trace (JSON or Parquet) or a raw stream left by the runtime.
-F/-N/-D/-t/--tid choose the calls exported as in `calltrace replay`. chrome,
perfetto and speedscope write every call: past --max-events calls (default
{MAX_EVENTS:,}) they stop, write nothing, and say so.

examples:
  calltrace export trace.json -f perfetto -o trace.pftrace
  calltrace export trace.parquet -f chrome -F '^parse' -t 10us
  calltrace export trace.json -f html -o trace.html
  calltrace export trace.json -f folded -o - | flamegraph.pl > flame.svg"""


def add_arguments(p) -> None:
    p.add_argument("trace", nargs="+", help="a trace file (JSON or Parquet), a raw stream, or the "
                   "parts of one rolling run (trace.00001.json trace.00002.json ...)")
    p.add_argument("-f", "--format", required=True, choices=FORMATS, help="output format")
    p.add_argument("-o", "--output", metavar="OUT",
                   help="output file ('-' for stdout; default: the trace's name with the "
                        "format's suffix)")
    add_filters(p)
    p.add_argument("--title", help="title shown in svg and html (default: the program's name)")
    p.add_argument("--width", type=at_least(200), default=1200,
                   help="svg: width in pixels, 200 or more (default 1200)")
    p.add_argument("--max-calls", type=int, default=200_000, metavar="N",
                   help="html: keep at most N calls in the timeline, the longest ones "
                        "(default 200000); the function table always covers all calls")
    p.add_argument("--max-events", type=int, default=MAX_EVENTS, metavar="N",
                   help=f"chrome, perfetto, speedscope: refuse to write more than N calls "
                        f"(default {MAX_EVENTS})")


def _default_output(trace_path: str, suffix: str) -> str:
    for ext in (".json", ".parquet", ".raw"):
        if trace_path.endswith(ext):
            return trace_path[:-len(ext)] + suffix
    return trace_path + suffix


def _load(paths: list[str], scratch: list[str]):
    """A trace; a raw stream is first converted (streamed) to Parquet."""
    if len(paths) == 1 and os.path.isfile(paths[0]) and has_raw_magic(paths[0]):
        from ..record.convert import convert
        tmp = tempfile.mkdtemp(prefix="calltrace-export-")
        scratch.append(tmp)
        return load_any([convert(paths[0], os.path.join(tmp, "trace.parquet")).path])
    return load_any(paths)


def _budget(trace, args) -> Budget | None:
    if args.format not in TIMELINE:
        return None
    threads = pick_threads(trace, args.tid)
    n = trace.total_calls if not args.tid else sum(len(t.calls) for t in threads)
    return Budget(args.max_events, args.trace[0]) if n > args.max_events else None


def run(args) -> int:
    if args.max_calls < 1:
        raise CalltraceError("--max-calls must be at least 1")
    if args.max_events < 1:
        raise CalltraceError("--max-events must be at least 1")
    flt = make_filter(args)
    if args.format == "parquet" and (flt != Filter() or args.tid):
        raise CalltraceError("-F/-N/-D/-t/--tid do not apply to -f parquet (it is the whole "
                             "trace; use `calltrace sql` for a subset)")
    mod = module(args.format)
    binary = getattr(mod, "BINARY", False)
    options = Options(title=args.title, width=args.width, max_calls=args.max_calls)
    scratch: list[str] = []
    try:
        whole = _load(args.trace, scratch)
        warn(whole)
        if args.format == "parquet":
            whole.copied_note()
        trace = view(whole, flt, args.tid, _budget(whole, args))
        out_path = args.output or _default_output(args.trace[0], mod.SUFFIX)
        passes = 2 if args.format == "html" and trace.total_calls > args.max_calls else 1
        with reading(whole, f"exporting {args.format}", passes=passes):
            if out_path == "-":
                mod.write(trace, sys.stdout.buffer if binary else sys.stdout, options)
                return 0
            if any(os.path.abspath(out_path) == os.path.abspath(t) for t in args.trace):
                raise CalltraceError(f"{out_path}: would overwrite the trace itself")
            write_atomic(out_path, lambda f: mod.write(trace, f, options), "export",
                         encoding=None if binary else "utf-8", errors="backslashreplace")
    finally:
        for d in scratch:
            shutil.rmtree(d, ignore_errors=True)
    print(f"wrote {out_path}", file=sys.stderr)
    return 0
