"""Where a function's code is: DW_AT_low_pc/high_pc, or DW_AT_ranges for
code split into parts (gcc's hot/cold partitioning, g++'s `.cold` parts for
exception clean-ups, inlined copies spread over several blocks)."""
from __future__ import annotations

from elftools.dwarf.ranges import BaseAddressEntry, RangeEntry


def _addr(die, name: str) -> int | None:
    a = die.attributes.get(name)
    return a.value if a is not None and a.form in ("DW_FORM_addr", "DW_FORM_addrx", "DW_FORM_GNU_addr_index",
                                                     "DW_FORM_addrx1", "DW_FORM_addrx2", "DW_FORM_addrx4") \
        and isinstance(a.value, int) else None


def spans(dwarf, die, cu) -> list[tuple[int, int]]:
    """The [lo, hi) address ranges of a DIE's code, in DWARF order (gcc
    lists the part holding the entry first); [] when it has none."""
    a = die.attributes
    low = _addr(die, "DW_AT_low_pc")
    if low is not None:
        hi = a.get("DW_AT_high_pc")
        if hi is None:
            return [(low, low + 1)]
        return [(low, hi.value if hi.form == "DW_FORM_addr" else low + hi.value)]
    attr = a.get("DW_AT_ranges")
    lists = dwarf.range_lists() if attr is not None else None
    if lists is None:
        return []
    top = cu.get_top_DIE()
    base = _addr(top, "DW_AT_low_pc") or 0
    out = []
    for e in lists.get_range_list_at_offset(attr.value, cu=cu):
        if isinstance(e, BaseAddressEntry):
            base = e.base_address
        elif isinstance(e, RangeEntry) and e.end_offset > e.begin_offset:
            out.append((e.begin_offset, e.end_offset) if e.is_absolute
                       else (base + e.begin_offset, base + e.end_offset))
    return out


def entry(dwarf, die, cu) -> tuple[int, int, int] | None:
    """(entry address, start and end of the part holding it): the entry is
    DW_AT_entry_pc where given, else the start of the first part."""
    parts = spans(dwarf, die, cu)
    pc = _addr(die, "DW_AT_entry_pc")
    if pc is None and "DW_AT_entry_pc" in die.attributes and parts:
        # DWARF 5 allows a constant: an offset from the base (low_pc or the first part).
        v = die.attributes["DW_AT_entry_pc"].value
        pc = parts[0][0] + v if isinstance(v, int) else None
    if pc is None:
        if not parts:
            return None
        pc = parts[0][0]
    for lo, hi in parts:
        if lo <= pc < hi:
            return pc, lo, hi
    return (pc, parts[0][0], parts[0][1]) if parts else None


def definitions(cu):
    """The subprogram DIEs of a unit that may have code: at its top level,
    inside namespaces (g++ puts namespace-scope definitions there), and the
    member functions of classes local to a function (inside its DIE)."""
    stack = [cu.get_top_DIE()]
    while stack:
        for die in stack.pop().iter_children():
            if die.tag == "DW_TAG_subprogram":
                yield die
                if die.has_children and "DW_AT_inline" in die.attributes:
                    stack.append(die)
            elif die.tag in ("DW_TAG_namespace", "DW_TAG_structure_type", "DW_TAG_class_type",
                             "DW_TAG_union_type") and die.has_children:
                stack.append(die)
