"""Durations: printing them and reading them from the command line."""
from __future__ import annotations

import re

from ..errors import CalltraceError

_UNITS = {"ns": 1, "us": 1_000, "µs": 1_000, "ms": 1_000_000, "s": 1_000_000_000}
_DURATION = re.compile(r"^\s*(\d+(?:\.\d*)?|\.\d+)\s*(ns|us|µs|ms|s)?\s*$")


def fmt_ns(ns: int) -> str:
    """A duration with a unit that keeps 3-4 significant digits: 950 ns,
    12.345 us, 1.500 ms, 2.000 s."""
    if ns < 1_000:
        return f"{ns} ns"
    if ns < 1_000_000:
        return f"{ns / 1_000:.3f} us"
    if ns < 1_000_000_000:
        return f"{ns / 1_000_000:.3f} ms"
    return f"{ns / 1_000_000_000:.3f} s"


def parse_duration(text: str) -> int:
    """'10us' -> 10000 (ns). A bare number means nanoseconds."""
    m = _DURATION.match(text)
    if not m:
        raise CalltraceError(f"bad duration {text!r}: use a number with ns, us, ms or s (e.g. 10us)")
    return round(float(m.group(1)) * _UNITS[m.group(2) or "ns"])


def argparse_duration(text: str) -> int:
    import argparse
    try:
        return parse_duration(text)
    except CalltraceError as e:
        raise argparse.ArgumentTypeError(str(e)) from None
