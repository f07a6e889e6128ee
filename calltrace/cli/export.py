"""``calltrace export``: write a trace in another tool's format."""
from __future__ import annotations

import os
import sys

from ..trace.parts import load_any
from ..analysis.progress import reading, warn
from ..errors import CalltraceError
from ..files import write_atomic
from ..export import FORMATS, Options, module

NAME = "export"
HELP = "convert a trace: chrome, speedscope, folded, svg or html"
DESCRIPTION = """Write a trace in another format:
  chrome      Trace Event Format JSON: open in https://ui.perfetto.dev or chrome://tracing
  speedscope  speedscope's JSON (https://www.speedscope.app)
  folded      collapsed stacks, one line per call path with its self time in ns,
              for flamegraph.pl, inferno-flamegraph and the like
  svg         a flame graph drawn by calltrace (all threads merged)
  html        one self-contained page (no network access): a zoomable timeline
              per thread, search, and a sortable function table

examples:
  calltrace export trace.json -f chrome -o trace.chrome.json
  calltrace export trace.json -f html -o trace.html
  calltrace export trace.json -f folded -o - | flamegraph.pl > flame.svg"""


def add_arguments(p) -> None:
    p.add_argument("trace", nargs="+", help="a trace file (calltrace.json), or the parts of "
                   "one rolling run (trace.00001.json trace.00002.json ...)")
    p.add_argument("-f", "--format", required=True, choices=FORMATS, help="output format")
    p.add_argument("-o", "--output", metavar="OUT",
                   help="output file ('-' for stdout; default: the trace's name with the "
                        "format's suffix)")
    p.add_argument("--title", help="title shown in svg and html (default: the program's name)")
    p.add_argument("--width", type=int, default=1200, help="svg: width in pixels (default 1200)")
    p.add_argument("--max-calls", type=int, default=200_000, metavar="N",
                   help="html: keep at most N calls in the timeline, the longest ones "
                        "(default 200000); the function table always covers all calls")


def _default_output(trace_path: str, suffix: str) -> str:
    base = trace_path[:-5] if trace_path.endswith(".json") else trace_path
    return base + suffix


def run(args) -> int:
    if args.max_calls < 1:
        raise CalltraceError("--max-calls must be at least 1")
    mod = module(args.format)
    options = Options(title=args.title, width=args.width, max_calls=args.max_calls)
    trace = load_any(args.trace)
    warn(trace)
    out_path = args.output or _default_output(args.trace[0], mod.SUFFIX)
    passes = 2 if args.format == "html" and trace.total_calls > args.max_calls else 1
    with reading(trace, f"exporting {args.format}", passes=passes):
        if out_path == "-":
            mod.write(trace, sys.stdout, options)
            return 0
        if any(os.path.abspath(out_path) == os.path.abspath(t) for t in args.trace):
            raise CalltraceError(f"{out_path}: would overwrite the trace itself")
        write_atomic(out_path, lambda f: mod.write(trace, f, options), "export",
                     encoding="utf-8", errors="backslashreplace")
    print(f"wrote {out_path}", file=sys.stderr)
    return 0
