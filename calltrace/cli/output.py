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


def print_top(functions, limit: int, file, self_label: str = "self") -> None:
    """The hottest functions by self time, as the run/debug summaries show them."""
    top = [f for f in functions if f.calls][:limit]
    if not top:
        return
    print(f"  {self_label:>12} {'total':>12} {'calls':>10}  function", file=file)
    for f in top:
        print(f"  {ns(f.self_ns):>12} {ns(f.total_ns):>12} {count(f.calls):>10}  {f.function}", file=file)
