"""Human-readable figures shared by the commands' summaries."""
from __future__ import annotations


def ns(value: float) -> str:
    """1234567 -> '1.235 ms'."""
    v = float(value)
    for unit, scale in (("s", 1e9), ("ms", 1e6), ("us", 1e3)):
        if v >= scale:
            return f"{v / scale:.3f} {unit}"
    return f"{int(v)} ns"


def count(n: int) -> str:
    return f"{n:,}"
