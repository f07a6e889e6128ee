"""The summaries `calltrace run` and `calltrace debug` print on stderr after
a recording, as lines of text (the commands only print them)."""
from __future__ import annotations

from ..units import count, fmt_ns, plural
from .render import top_lines


ENDINGS = {"exec": "replaced by exec", "running": "still running", "detached": "detached, the process goes on",
           "unknown": "end not recorded (still running when converted, or killed by SIGKILL)"}


def _end(m: dict) -> str:
    """How the process ended; never "exit status None"."""
    if m["termination"] == "signal":
        return f"killed by signal {m['signal']}"
    if m["termination"] == "exit" and m["exit_status"] is not None:
        return f"exit status {m['exit_status']}"
    return ENDINGS.get(m["termination"], m["termination"])


def run_lines(metadata: dict, functions, notes: list[str], path: str, top: int = 10) -> list[str]:
    """One converted trace of `calltrace run`."""
    m = metadata
    extra = []
    if m["incomplete_calls"]:
        extra.append(f"{count(m['incomplete_calls'])} still open at the end")
    if m["depth_limited_calls"]:
        extra.append(f"{count(m['depth_limited_calls'])} below --max-depth not recorded")
    if m.get("filtered_calls"):
        extra.append(f"{count(m['filtered_calls'])} shorter than --threshold dropped")
    if m["dropped_events"]:
        extra.append(f"{count(m['dropped_events'])} events dropped")
    head = (f"calltrace: {plural(m['total_calls'], 'call')}, {plural(m['thread_count'], 'thread')}, "
            f"{fmt_ns(m['duration_ns'])}, pid {m['pid']}, {_end(m)}" + (f" ({'; '.join(extra)})" if extra else ""))
    return ([head] + top_lines(functions, top) + [f"calltrace: note: {n}" for n in notes]
            + [f"calltrace: trace written to {path}"])


def debug_lines(res, output: str) -> list[str]:
    """A `calltrace debug` result (debug.tracer.Result)."""
    m = res.metadata
    rate = res.stops / res.wall_s if res.wall_s else 0
    out = [f"calltrace debug: {plural(m['total_calls'], 'call')}, {plural(m['thread_count'], 'thread')}, "
           f"pid {m['pid']}, {_end(m)}",
           f"  {count(res.stops)} GDB stops in {res.wall_s:.2f} s ({rate:,.0f} stops/s); "
           f"{fmt_ns(res.per_stop_ns)} per stop subtracted from CPU-time durations"]
    extra = []
    if m["incomplete_calls"]:
        extra.append(f"{count(m['incomplete_calls'])} calls still open at the end")
    if m["depth_limited_calls"]:
        extra.append(f"{count(m['depth_limited_calls'])} calls below --max-depth not recorded")
    if extra:
        out.append("  " + "; ".join(extra))
    out += top_lines(res.functions, 8, "self (cpu)") + [f"calltrace: note: {n}" for n in res.notes]
    if output != "/dev/null":
        out.append(f"calltrace: trace written to {output}")
    return out
