"""``calltrace attach PID``: record a process that is already running."""
from __future__ import annotations

import argparse
import os
import sys

from ..attach.record import Options, record
from ..files import probe_writable
from . import options
from ..analysis.summary import run_lines
from ..units import argparse_duration

NAME = "attach"
HELP = "record a running process (built with -finstrument-functions) until Ctrl-C"
DESCRIPTION = """\
Load the recorder into a running process, record its calls until Ctrl-C,
--duration or the program's end, then detach and write the trace. The
process keeps running, unchanged.

  calltrace attach 4242                       # until Ctrl-C; writes calltrace.json
  calltrace attach 4242 --duration 10s -o t.json
  calltrace attach 4242 -F '^handle_' --capture-args

The program must have been built with -finstrument-functions and linked
dynamically; it need not have been started by calltrace. Attaching needs
the right to ptrace the process (same user, and kernel.yama.ptrace_scope 0,
or root). See docs/ATTACH.md.
"""


def _duration(text: str) -> int:
    ns = argparse_duration(text)
    if ns <= 0:
        raise argparse.ArgumentTypeError(f"{text!r} must be more than 0 (without --duration, "
                                         "the recording runs until Ctrl-C)")
    return ns


def add_arguments(p) -> None:
    p.add_argument("pid", type=options.pid, help="the process to record")
    options.add_output(p)
    p.add_argument("--duration", type=_duration, metavar="TIME",
                   help="record for TIME (e.g. 10s, 500ms), then detach")
    p.add_argument("--max-depth", type=options.positive_int, metavar="N",
                   help="record only calls less than N deep (the calls open at attach count)")
    options.add_format(p)
    p.add_argument("--capture-args", action="store_true",
                   help="record each call's arguments, typed from DWARF")
    options.add_selection(p)
    p.add_argument("-t", "--threshold", metavar="TIME", type=argparse_duration,
                   help="drop calls shorter than TIME (e.g. 10us, 1ms), with what they called")
    p.add_argument("--debug", action="store_true", help="the recorder's diagnostics (on the program's stderr)")
    p.add_argument("-q", "--quiet", action="store_true", help="no summary")
    p.add_argument("--top", type=options.positive_int, default=10, metavar="N",
                   help="functions in the summary (default 10)")


def run(args) -> int:
    output = options.output_path(args.output)
    probe_writable(output, os.path.dirname(os.path.abspath(output)))
    opts = Options(pid=args.pid, output=output, duration_ns=args.duration, max_depth=args.max_depth,
                   threshold_ns=args.threshold, function=args.function, only=args.only, exclude=args.exclude,
                   capture_args=args.capture_args, pretty=args.pretty, debug=args.debug)

    def recording(attach_s: float) -> None:
        if not args.quiet:
            how = f"for {args.duration / 1e9:g} s" if args.duration else "until Ctrl-C"
            print(f"calltrace: recording process {args.pid} {how} (attached in {attach_s:.2f} s)",
                  file=sys.stderr, flush=True)

    res = record(opts, recording)
    if not args.quiet:
        summary(res, args.pid, args.top)
    return 0


def summary(res, pid: int, top: int) -> None:
    how = ("detached; the process goes on" if res.ended == "detached"
           else f"the process {res.ended} while attached")
    print(f"calltrace: {how} (detached in {res.detach_s:.2f} s)", file=sys.stderr)
    r = res.converted
    if r is not None:
        for line in run_lines(r.metadata, r.functions, r.notes, r.path, top):
            print(line, file=sys.stderr)
