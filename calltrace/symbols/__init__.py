"""Addresses to names: ELF symbol tables, DWARF subprograms, demangling."""
from .resolver import FunctionInfo, Module, Resolver

__all__ = ["FunctionInfo", "Module", "Resolver"]
