"""``calltrace info``: a trace's metadata in readable form."""
from __future__ import annotations

import shlex
import sys

from ..trace.parts import load_any
from ..analysis.progress import reading, warn
from ..units import count, fmt_ns, plural

NAME = "info"
HELP = "show a trace's metadata: program, exit, threads, counts"


def add_arguments(p) -> None:
    p.add_argument("trace", nargs="+", help="a trace file (calltrace.json), or the parts of "
                   "one rolling run (trace.00001.json trace.00002.json ...)")


def _exit(md: dict) -> str:
    term = md.get("termination", "unknown")
    status = md.get("exit_status")
    if term == "exit":
        return f"exited with status {status}"
    if term == "signal":
        return f"killed by signal {md.get('signal')}" + (f" (status {status})" if status is not None else "")
    if term == "exec":
        return "replaced its image (exec)"
    if term == "running":
        return "still running when written (periodic flush)"
    return "unknown" + (f" (status {status})" if status is not None else "")


def _options(opts: dict) -> str:
    return ", ".join(f"{k}={'none' if v is None else v}" for k, v in opts.items()) or "none"


def run(args) -> int:
    trace = load_any(args.trace)
    warn(trace)
    md = trace.metadata
    rows = [
        ("trace", trace.path),
        ("program", md.get("program", "?")),
        ("command", shlex.join(md.get("argv") or [])),
        ("pid", str(md.get("pid")) + (f" (child of {md['parent_pid']})" if md.get("parent_pid") else "")),
        ("host", md.get("hostname")),
        ("started", md.get("start_time")),
        ("duration", fmt_ns(md.get("duration_ns") or 0)),
        ("end", _exit(md)),
        ("recorded by", f"{md.get('backend', '?')} backend, calltrace {md.get('calltrace_version', '?')}"),
        ("clock", md.get("clock")),
        ("timing", md.get("timing")),
        ("options", _options(md.get("options") or {})),
        ("calls", count(md["total_calls"])),
        ("functions", count(len(trace.functions))),
        ("incomplete calls", count(md.get("incomplete_calls", 0))),
        ("depth-limited calls", count(md.get("depth_limited_calls", 0))),
        ("dropped events", count(md.get("dropped_events", 0))),
    ]
    part = md.get("part")
    if part:
        rows.append(("part", _options(part)))
    width = max(len(k) for k, _ in rows)
    out = [f"{k + ':':<{width + 1}} {v}" for k, v in rows if v is not None]
    for note in md.get("notes") or []:
        out.append(f"{'note:':<{width + 1}} {note}")
    if trace.functions:
        hot = trace.functions[0]
        out.append(f"{'hottest:':<{width + 1}} {hot.function} ({fmt_ns(hot.self_ns)} self, {plural(hot.calls, 'call')})")
    out.append(f"threads ({count(md.get('thread_count', len(trace.threads)))}):")
    with reading(trace, "counting calls"):
        for t in trace.threads:
            n = len(t.calls)
            out.append(f"  {t.tid:>8}  {plural(n, 'call'):>12}  {'[main] ' if t.main else ''}{t.name or ''}")
    sys.stdout.write("\n".join(line.rstrip() for line in out) + "\n")
    return 0
