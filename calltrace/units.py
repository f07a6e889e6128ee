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


def _for_argparse(parse):
    """`parse` as an argparse `type`: its error becomes the option's error."""
    def convert(text: str) -> int:
        try:
            return parse(text)
        except CalltraceError as e:
            raise argparse.ArgumentTypeError(str(e)) from None
    return convert


argparse_duration = _for_argparse(parse_duration)


_SIZE = re.compile(r" *([0-9]+(?:\.[0-9]*)?|\.[0-9]+) *(?:([kKmMgGtT])(?:i?B)?|B)? *", re.ASCII)


def parse_size(text: str) -> int:
    """'500M' -> 524288000 (bytes): a decimal number, then K, M, G or T
    (powers of 1024, optionally followed by B or iB) or B; a bare number is
    bytes. runtime/config.c reads CALLTRACE_MAX_SIZE the same way."""
    m = _SIZE.fullmatch(text)
    if not m:
        raise CalltraceError(f"{text!r} is not a size (like 500M, 2G, 64K)")
    value = int(Fraction(m.group(1)) * 1024 ** (" KMGT".index(m.group(2).upper()) if m.group(2) else 0))
    if value < 1:
        raise CalltraceError(f"{text!r} must be more than 0 bytes")
    return value


argparse_size = _for_argparse(parse_size)


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


def compile_regex(text: str, option: str) -> re.Pattern:
    try:
        return re.compile(text)
    except re.error as e:
        raise CalltraceError(f"{option} {text!r} is not a valid regular expression: {e}") from None
