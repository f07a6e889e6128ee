"""Function selection: which functions -F/--function, --only and
-N/--exclude pick, the same for `calltrace run` (runtime/filter.c applies
them while recording) and `calltrace debug` (gdb_scripts/ct_select.py).

- ``-F REGEX``: the matching functions and everything they call (subtrees);
- ``--only REGEX``: the matching functions only, nested as they called each other;
- ``-N REGEX``: not the matching functions nor anything they call; with
  either of the others, or alone.

A regular expression is searched (re.search) in the function's readable
name (demangled for C++) and in its symbol, in the executable and in the
instrumented libraries it loads at start-up."""
from __future__ import annotations

import os
import re
from dataclasses import dataclass

from .. import bridge
from ..errors import CalltraceError
from .demangle import demangle
from .elf import elf_symbols
from ..units import compile_regex


@dataclass(frozen=True)
class Selection:
    function: str | None = None     # -F: subtrees
    only: str | None = None         # --only: the functions themselves
    exclude: str | None = None      # -N

    def __post_init__(self):
        if self.function is not None and self.only is not None:
            raise CalltraceError("use -F/--function or --only, not both")
        for text, option in ((self.function, "--function"), (self.only, "--only"), (self.exclude, "--exclude")):
            if text is not None:
                compile_regex(text, option)

    @property
    def active(self) -> bool:
        return any(x is not None for x in (self.function, self.only, self.exclude))

    @property
    def include(self) -> str | None:
        return self.function if self.function is not None else self.only

    @property
    def mode(self) -> int:
        """bridge.FILTER_* bits, as the filter file and the runtime spell them."""
        return ((bridge.FILTER_SUBTREE if self.function is not None else 0)
                | (bridge.FILTER_ONLY if self.only is not None else 0)
                | (bridge.FILTER_EXCLUDE if self.exclude is not None else 0))

    def describe(self) -> str:
        parts = [f"{o} {t!r}" for o, t in (("--function", self.function), ("--only", self.only),
                                           ("--exclude", self.exclude)) if t is not None]
        return " ".join(parts)


def matching(names: list[str], pattern: re.Pattern | None) -> set[str]:
    """The symbols whose own or demangled name the pattern finds."""
    if pattern is None:
        return set()
    readable = demangle(names)
    return {n for n in names if pattern.search(n) or pattern.search(readable.get(n, n))}


def pick(path: str, sel: Selection) -> tuple[list[int], list[int]]:
    """Entry addresses (link time) in one ELF file of the included and the
    excluded functions."""
    syms = elf_symbols(path).functions()
    names = [s.name for s in syms]
    inc = matching(names, compile_regex(sel.include, "--function") if sel.include is not None else None)
    exc = matching(names, compile_regex(sel.exclude, "--exclude") if sel.exclude is not None else None)
    return (sorted({s.start for s in syms if s.name in inc}),
            sorted({s.start for s in syms if s.name in exc}))


def modules(program: str, sel: Selection) -> list[tuple[str, list[int], list[int]]]:
    """(path, included, excluded) for the executable (first) and the
    instrumented libraries it loads at start-up."""
    from .libraries import instrumented_libraries
    exe = os.path.realpath(program)
    return [(path, *pick(path, sel)) for path in [exe] + [p for p in instrumented_libraries(exe) if p != exe]]
