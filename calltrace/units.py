"""Durations and counts as people read and write them: the one parser of a
duration (`-t 10us`, `--min-time 2ms`, CALLTRACE_THRESHOLD) and the one
formatter of durations and counts.

The grammar, which runtime/config.c accepts exactly (both are tested against
tests/data/durations.txt): optional spaces, a decimal number (``10``,
``2.5``, ``.5``, ``3.``), optional spaces, an optional unit ``ns`` (the
default), ``us`` (also ``µs`` or ``μs``), ``ms`` or ``s``, optional spaces.
The value is rounded to the nearest nanosecond (halves up) and may be at
most 10^15 ns (about 11.6 days); no sign, exponent or other unit."""
from __future__ import annotations

import argparse
import re
from fractions import Fraction

from .errors import CalltraceError

UNITS = {"ns": 1, "us": 1_000, "µs": 1_000, "μs": 1_000, "ms": 1_000_000, "s": 1_000_000_000}
MAX_NS = 10 ** 15
DURATION_HELP = "a number with ns, us, ms or s (e.g. 10us, 2.5ms); a bare number is ns"
_DURATION = re.compile(r" *([0-9]+(?:\.[0-9]*)?|\.[0-9]+) *(ns|us|µs|μs|ms|s)? *", re.ASCII)


def parse_duration(text: str) -> int:
    """'10us' -> 10000 (ns); raises CalltraceError on anything else."""
    m = _DURATION.fullmatch(text)
    ns = None
    if m:
        ns = int(Fraction(m.group(1)) * UNITS[m.group(2) or "ns"] + Fraction(1, 2))
    if ns is None or ns > MAX_NS:
        raise CalltraceError(f"bad duration {text!r}: use {DURATION_HELP}")
    return ns


def argparse_duration(text: str) -> int:
    """parse_duration as an argparse `type`."""
    try:
        return parse_duration(text)
    except CalltraceError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def fmt_ns(ns: float) -> str:
    """A duration with a unit that keeps 3-4 significant digits: 950 ns,
    12.345 us, 1.500 ms, 2.000 s."""
    v = float(ns)
    for unit, scale in (("s", 1e9), ("ms", 1e6), ("us", 1e3)):
        if v >= scale:
            return f"{v / scale:.3f} {unit}"
    return f"{int(v)} ns"


def count(n: int) -> str:
    """12345 -> '12,345'."""
    return f"{n:,}"


def plural(n: int, word: str, many: str | None = None) -> str:
    """'1 call', '2,000 calls'."""
    return f"{count(n)} {word if n == 1 else (many or word + 's')}"
