"""Addresses to names: ELF symbol tables, DWARF subprograms, demangling."""
from .resolver import FunctionInfo, Resolver

__all__ = ["FunctionInfo", "Resolver"]
