"""``calltrace convert``: turn a raw runtime stream into the JSON trace.

The runtime runs this itself at exit under a bare LD_PRELOAD; by hand it
recovers a trace whose process was killed before conversion (SIGKILL)."""
from __future__ import annotations

import argparse
import os
import sys

from ..record.convert import convert
from ..units import plural
from . import options

NAME = "convert"
HELP = "convert a raw stream left by the runtime (FILE.raw) into a JSON trace"


def add_arguments(p) -> None:
    p.add_argument("raw", metavar="RAW", help="raw stream written by libcalltrace.so")
    p.add_argument("-o", "--output", metavar="PATH",
                   help="JSON trace to write (default: the output the program was given)")
    options.add_format(p)
    p.add_argument("--from-runtime", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("-q", "--quiet", action="store_true", help="print nothing on success")
    p.add_argument("--verbose", action="store_true", help=argparse.SUPPRESS)


def run(args) -> int:
    result = convert(args.raw, args.output, pretty=args.pretty,
                     progress=sys.stderr.isatty() and not args.quiet)
    if args.from_runtime:
        os.unlink(args.raw)
    if not args.quiet or args.verbose:
        m = result.metadata
        print(f"calltrace: {plural(m['total_calls'], 'call')}, {plural(m['thread_count'], 'thread')}: "
              f"trace written to {result.path}", file=sys.stderr)
    return 0
