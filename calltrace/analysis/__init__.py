"""Analyses over loaded traces: statistics, filtering, call paths, diffs and
the aggregated call tree. Everything here streams the calls (rows, or column
batches through the native kernels for call_tree) and keeps memory bounded
by the number of functions or distinct paths."""
from .diff import Change, compare, regressions
from .paths import Closed, Filter, closed_calls, select, with_paths
from .stats import COLUMNS, SlowCall, slowest, sort_stats, thread_stats
from .tree import Node, call_tree
from ..units import fmt_ns, parse_duration

__all__ = ["Change", "compare", "regressions", "Closed", "Filter", "closed_calls", "select",
           "with_paths", "COLUMNS", "SlowCall", "slowest", "sort_stats", "thread_stats", "Node",
           "call_tree", "fmt_ns", "parse_duration"]
