"""``calltrace diff``: per-function changes between two traces."""
from __future__ import annotations

import math
import os
import sys

from .. import load
from ..analysis.diff import METRICS, compare, regressions
from ..analysis.progress import warn
from ..analysis.render import table
from ..units import argparse_duration, fmt_ns
from ..errors import CalltraceError
from .options import positive_int

NAME = "diff"
HELP = "compare two traces function by function (regressions first)"
DESCRIPTION = """Compare the per-function calls and time of two traces of the same
program: functions that got slower come first, then unchanged ones, then
those that got faster. With --fail-above PCT the exit status is 1 when a
function's time grew by more than PCT percent, so it can gate CI.

examples:
  calltrace diff base.json new.json
  calltrace diff --fail-above 20 --min-time 1ms base.json new.json"""


def add_arguments(p) -> None:
    p.add_argument("base", help="the baseline trace")
    p.add_argument("new", help="the trace to compare with it")
    p.add_argument("-m", "--metric", choices=METRICS, default="total",
                   help="time compared: total (inclusive, default) or self (exclusive)")
    p.add_argument("--fail-above", metavar="PCT", type=float,
                   help="exit with status 1 if a function's time grew by more than PCT percent")
    p.add_argument("--min-time", metavar="TIME", type=argparse_duration, default=0,
                   help="for --fail-above: ignore functions shorter than TIME in both traces")
    p.add_argument("-n", "--limit", metavar="N", type=positive_int, help="show only the first N rows")
    p.add_argument("-a", "--all", action="store_true", help="also list unchanged functions")


def _pct(c) -> str:
    pct = c.percent
    if c.base is None:
        return "new"
    if c.new is None:
        return "gone"
    return f"{pct:+.1f}%"


def _calls(c) -> str:
    d = c.new_calls - c.base_calls
    return f"{c.base_calls} -> {c.new_calls}" + (f" ({d:+d})" if d else "")


def _delta(ns: int) -> str:
    return ("+" if ns > 0 else "-" if ns < 0 else "") + fmt_ns(abs(ns))


def run(args) -> int:
    # `not 0 <= x`, not `x < 0`: nan compares false to everything and would never fail.
    if args.fail_above is not None and not 0 <= args.fail_above < math.inf:
        raise CalltraceError(f"--fail-above must be a finite number, 0 or more (not {args.fail_above:g})")
    base, new = load(args.base), load(args.new)
    warn(base)
    warn(new)
    progs = [os.path.basename(t.metadata.get("program") or "") for t in (base, new)]
    if all(progs) and progs[0] != progs[1]:
        # Allowed (a rewrite compared with the original), but rarely meant.
        print(f"calltrace: warning: the traces are of different programs: {progs[0]} ({base.path}) "
              f"and {progs[1]} ({new.path})", file=sys.stderr)
    changes = compare(base, new, args.metric)
    shown = [c for c in changes if args.all or c.delta_ns or c.base_calls != c.new_calls
             or c.base is None or c.new is None]
    if args.limit is not None:
        shown = shown[:args.limit]
    out = [f"{args.metric} time per function, {base.path} -> {new.path}",
           f"traced time: {fmt_ns(base.metadata.get('duration_ns') or 0)} -> "
           f"{fmt_ns(new.metadata.get('duration_ns') or 0)}; "
           f"calls: {base.metadata['total_calls']} -> {new.metadata['total_calls']}", ""]
    body = [(fmt_ns(c.base_ns), fmt_ns(c.new_ns), _delta(c.delta_ns), _pct(c), _calls(c), c.function)
            for c in shown]
    if body:
        out.extend(table(("base", "new", "change", "%", "calls", "function"), body, left=2))
    else:
        out.append("no differences")
    status = 0
    if args.fail_above is not None:
        bad = regressions(changes, args.fail_above, args.min_time)
        out.append("")
        if bad:
            worst = ", ".join(f"{c.function} {_pct(c)}" for c in bad[:5])
            out.append(f"FAIL: {len(bad)} function(s) slower by more than {args.fail_above:g}%: {worst}")
            status = 1
        else:
            out.append(f"ok: no function slower by more than {args.fail_above:g}%")
    sys.stdout.write("\n".join(out) + "\n")
    return status
