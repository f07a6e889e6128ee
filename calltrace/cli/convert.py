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
from pathlib import Path

from ..errors import CalltraceError
from ..record.collect import convert_folder, recorded_run
from ..record.convert import convert, transcode
from ..record.raw import looks_raw
from ..record.rawdir import RUN, RawDir, streams, writer
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
        cut = False
        if looks_raw(raw):
            # The runtime hands over parts it has finished with, still open.
            if not args.from_runtime:
                _not_written(Path(raw))
            result = convert(raw, args.output, pretty=args.pretty,
                             progress=sys.stderr.isatty() and not args.quiet)
            path, m = result.path, result.metadata
            if args.from_runtime:
                os.unlink(raw)
        else:
            path, trace = transcode(raw, args.output, args.pretty)
            m, cut = trace.metadata, trace.truncated
            for w in trace.warnings:
                print(f"calltrace: warning: {raw}: {w}", file=sys.stderr)
        if not args.quiet or args.verbose:
            calls = "the calls before the cut" if cut else plural(m['total_calls'], 'call')
            print(f"calltrace: {calls}, {plural(m['thread_count'], 'thread')}: trace written to {path}",
                  file=sys.stderr)
    return 0


def _not_written(raw: Path) -> None:
    pid = writer(raw)
    if pid is not None:
        raise CalltraceError(f"{raw}: process {pid} is still writing it (its calltrace was stopped, not "
                             "the program): convert it once the program has ended")


def _folder(args, given: str) -> int:
    """Every trace of a stopped `calltrace run`, named as the run would have.
    Only a run's raw folder (it has run.json) is deleted once converted;
    from any other folder of streams the traces are written beside them."""
    folder = os.path.abspath(given)
    pid, output = recorded_run(folder)
    run_file = os.path.join(folder, RUN)
    ours = os.path.exists(run_file)
    if args.output is None and ours and not output.endswith("/") and os.path.exists(output) \
            and os.path.getmtime(output) > os.path.getmtime(run_file):
        raise CalltraceError(f"{output} was written after the run that left {given} began (by a later "
                             "run?): name this run's trace with -o")
    output = args.output or output
    for raw in streams(folder):
        _not_written(raw)
    lock = RawDir.adopt(folder) if ours else None
    results, failed = Interrupts(f"calltrace convert {shlex.quote(given)}").run(lambda: convert_folder(
        folder, pid, output, pretty=args.pretty, progress=sys.stderr.isatty() and not args.quiet,
        delete=ours))
    if failed:
        if lock:
            lock.release()
        raise CalltraceError("; ".join(failed))
    if lock:
        lock.remove()
    if not args.quiet:
        for r in results:
            m = r.metadata
            print(f"calltrace: {plural(m['total_calls'], 'call')}, {plural(m['thread_count'], 'thread')}, "
                  f"pid {m['pid']}: trace written to {r.path}", file=sys.stderr)
    return 0
