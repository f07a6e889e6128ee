"""Compare two traces function by function (their ``functions`` tables)."""
from __future__ import annotations

from typing import NamedTuple

from ..trace.model import FunctionStats, Trace

METRICS = ("total", "self")


class Change(NamedTuple):
    function: str
    base: FunctionStats | None   # None: the function is new
    new: FunctionStats | None    # None: the function is gone
    metric: str

    @property
    def base_ns(self) -> int:
        return _value(self.base, self.metric)

    @property
    def new_ns(self) -> int:
        return _value(self.new, self.metric)

    @property
    def delta_ns(self) -> int:
        return self.new_ns - self.base_ns

    @property
    def percent(self) -> float | None:
        """Change in percent; None when the base time is 0 (new function)."""
        if self.base_ns == 0:
            return None if self.new_ns else 0.0
        return 100.0 * self.delta_ns / self.base_ns

    @property
    def base_calls(self) -> int:
        return self.base.calls if self.base else 0

    @property
    def new_calls(self) -> int:
        return self.new.calls if self.new else 0


def _value(s: FunctionStats | None, metric: str) -> int:
    if s is None:
        return 0
    return s.total_ns if metric == "total" else s.self_ns


def compare(base: Trace, new: Trace, metric: str = "total") -> list[Change]:
    """Every function of either trace; regressions first (largest added time
    first), then unchanged, then improvements (largest saving last)."""
    old = {f.function: f for f in base.functions}
    cur = {f.function: f for f in new.functions}
    names = sorted(old.keys() | cur.keys())
    changes = [Change(n, old.get(n), cur.get(n), metric) for n in names]
    changes.sort(key=lambda c: (-c.delta_ns, c.function))
    return changes


def program_ns(trace: Trace) -> int:
    """The traced time: the sum of the outermost calls' times (all threads),
    i.e. the total time of every function called at depth 0."""
    return trace.metadata.get("duration_ns") or 0


def regressions(changes: list[Change], above_pct: float, min_ns: int) -> list[Change]:
    """Changes that grew by more than ``above_pct`` percent, ignoring
    functions below ``min_ns`` in both traces (noise in tiny functions)."""
    out = []
    for c in changes:
        if max(c.base_ns, c.new_ns) < min_ns or c.delta_ns <= 0:
            continue
        pct = c.percent
        if pct is None or pct > above_pct:
            out.append(c)
    return out
