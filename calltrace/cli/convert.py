"""``calltrace convert``: turn a raw runtime stream into a trace, or a trace
from one encoding into the other (JSON <-> Parquet, docs/FORMAT.md).

The runtime runs this itself at exit under a bare LD_PRELOAD; by hand it
recovers a trace whose process was killed before conversion (SIGKILL), or
every trace of a `calltrace run` that was stopped before it wrote them
(`calltrace convert OUTPUT.raw`: the run's raw folder)."""
from __future__ import annotations

import argparse
import os
import shlex
import sys

from ..errors import CalltraceError
from ..record.collect import convert_folder, recorded_run
from ..record.convert import convert, transcode
from ..record.raw import looks_raw
from ..record.rawdir import RawDir
from ..supervise import Interrupts
from ..units import plural
from . import options

NAME = "convert"
HELP = "convert a raw stream (FILE.raw) into a trace, or a trace between JSON and Parquet"
DESCRIPTION = """Convert a raw stream left by the runtime into a trace, or a trace from
one encoding into the other. The output's suffix chooses the encoding:
.parquet (or .pq) for Parquet, anything else for JSON.

examples:
  calltrace convert 4242.raw -o trace.parquet
  calltrace convert trace.json -o trace.parquet
  calltrace convert trace.parquet -o trace.json"""


def add_arguments(p) -> None:
    p.add_argument("raw", metavar="INPUT", nargs="+",
                   help="raw stream written by libcalltrace.so (several: the parts of a rolling run, in "
                        "order), the raw folder a stopped `calltrace run -o OUT` left (OUT.raw), or a "
                        "trace (JSON or Parquet) to write in the other encoding")
    p.add_argument("-o", "--output", metavar="PATH",
                   help="trace to write (default: for a raw stream, the output the program was "
                        "given; for a trace, its name in the other encoding)")
    options.add_format(p)
    p.add_argument("--from-runtime", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("-q", "--quiet", action="store_true", help="print nothing on success")
    p.add_argument("--verbose", action="store_true", help=argparse.SUPPRESS)




def run(args) -> int:
    if len(args.raw) == 1 and os.path.isdir(args.raw[0]):
        return _folder(args, args.raw[0])
    if args.output and len(args.raw) > 1:
        raise CalltraceError("-o/--output takes one input; each part is named after its trace")
    for raw in args.raw:
        if looks_raw(raw):
            result = convert(raw, args.output, pretty=args.pretty,
                             progress=sys.stderr.isatty() and not args.quiet)
            path, m = result.path, result.metadata
            if args.from_runtime:
                os.unlink(raw)
        else:
            path, m = transcode(raw, args.output, args.pretty)
        if not args.quiet or args.verbose:
            print(f"calltrace: {plural(m['total_calls'], 'call')}, {plural(m['thread_count'], 'thread')}: "
                  f"trace written to {path}", file=sys.stderr)
    return 0


def _folder(args, given: str) -> int:
    """Every trace of a stopped `calltrace run`, named as the run would have."""
    folder = os.path.abspath(given)
    pid, output = recorded_run(folder)
    output = args.output or output
    lock = RawDir.adopt(folder)
    results, failed = Interrupts(f"calltrace convert {shlex.quote(given)}").run(lambda: convert_folder(
        folder, pid, output, pretty=args.pretty, progress=sys.stderr.isatty() and not args.quiet))
    if failed:
        lock.release()
        raise CalltraceError("; ".join(failed))
    lock.remove()
    if not args.quiet:
        for r in results:
            m = r.metadata
            print(f"calltrace: {plural(m['total_calls'], 'call')}, {plural(m['thread_count'], 'thread')}, "
                  f"pid {m['pid']}: trace written to {r.path}", file=sys.stderr)
    return 0
