"""Addresses to names: ELF symbol tables, DWARF subprograms, demangling."""
from __future__ import annotations

__all__ = ["FunctionInfo", "Module", "Resolver"]


def __getattr__(name: str):
    # Loaded on first use: `calltrace run` checks the program with
    # symbols/elf.py and starts it before the resolver and DWARF are needed.
    if name in __all__:
        from . import resolver
        return getattr(resolver, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
