"""Parameter declaration order of functions gcc inlines.

GCC emits the parameters of an inlined copy (DW_TAG_inlined_subroutine) in
reverse, and GDB lists them in that order; the abstract function
(DW_AT_inline) keeps the declaration order. `calltrace debug` hands this
to GDB, which orders an inlined frame's arguments by it."""
from __future__ import annotations

from functools import lru_cache

from elftools.common.exceptions import DWARFError, ELFError
from elftools.elf.elffile import ELFFile

from .ranges import definitions


def order_key(function: str, params) -> str:
    """How GDB and this module name one inlinable function: its unqualified
    name and its parameters' names (GDB gives an inlined copy's symbol the
    line of the call, not of the declaration)."""
    short = function.split("(", 1)[0].rsplit("::", 1)[-1]
    return short + "|" + ",".join(sorted(params))


@lru_cache(maxsize=8)
def inline_param_orders(path: str) -> dict[str, list[str]]:
    """order_key -> the parameter names in declaration order, for each
    inlinable function with more than one (left out where two functions of
    one key disagree)."""
    out: dict[str, list[str]] = {}
    clash: set[str] = set()
    try:
        with open(path, "rb") as f:
            elf = ELFFile(f)
            if not elf.has_dwarf_info():
                return out
            for cu in elf.get_dwarf_info().iter_CUs():
                for die in definitions(cu):
                    if "DW_AT_inline" not in die.attributes:
                        continue
                    named = die if "DW_AT_name" in die.attributes or "DW_AT_specification" not in \
                        die.attributes else die.get_DIE_from_attribute("DW_AT_specification")
                    if "DW_AT_name" not in named.attributes:
                        continue
                    names = [c.attributes["DW_AT_name"].value.decode(errors="replace")
                             for c in die.iter_children()
                             if c.tag == "DW_TAG_formal_parameter" and "DW_AT_name" in c.attributes]
                    if len(names) < 2:
                        continue
                    key = order_key(named.attributes["DW_AT_name"].value.decode(errors="replace"), names)
                    if out.setdefault(key, names) != names:
                        clash.add(key)
    except (OSError, ELFError, DWARFError, KeyError, ValueError, AttributeError):
        pass   # no order known: GDB's stays
    for key in clash:
        del out[key]
    return out
