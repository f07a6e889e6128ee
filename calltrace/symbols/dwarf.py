"""Function definitions from DWARF: entry address -> name, file, line."""
from __future__ import annotations

import os
from dataclasses import dataclass

from elftools.common.exceptions import DWARFError, ELFError
from elftools.elf.elffile import ELFFile

from .cache import per_file


@dataclass(frozen=True)
class SourceFunction:
    name: str | None
    linkage_name: str | None
    file: str | None
    line: int | None


def _file_name(lineprog, index: int, version: int) -> str | None:
    if lineprog is None or index is None:
        return None
    entries = lineprog["file_entry"]
    i = index if version >= 5 else index - 1
    if not 0 <= i < len(entries):
        return None
    entry = entries[i]
    name = entry.name.decode(errors="replace")
    dirs = lineprog["include_directory"]
    d = entry.dir_index if version >= 5 else entry.dir_index - 1
    if d > 0 and d < len(dirs) and not os.path.isabs(name):
        name = os.path.join(dirs[d].decode(errors="replace"), name)
    return name


def _attr(die, name):
    a = die.attributes.get(name)
    return None if a is None else a.value


def _first(chain, name):
    for die in chain:
        v = _attr(die, name)
        if v is not None:
            return v
    return None


class DwarfFunctions:
    """Only the top-level subprograms of each unit are read: definitions with
    code live there in C and C++ (methods refer to their declaration)."""

    def __init__(self, path: str):
        self.by_addr: dict[int, SourceFunction] = {}
        try:
            with open(path, "rb") as f:
                elf = ELFFile(f)
                if not elf.has_dwarf_info():
                    return
                dwarf = elf.get_dwarf_info()
                for cu in dwarf.iter_CUs():
                    lineprog = dwarf.line_program_for_CU(cu)
                    version = cu["version"]
                    for die in cu.get_top_DIE().iter_children():
                        if die.tag != "DW_TAG_subprogram" or "DW_AT_low_pc" not in die.attributes:
                            continue
                        # A definition may point at an abstract instance, which
                        # points at the declaration inside its class.
                        chain = [die]
                        while len(chain) < 4:
                            cur = chain[-1]
                            ref = next((a for a in ("DW_AT_specification", "DW_AT_abstract_origin")
                                        if a in cur.attributes), None)
                            if ref is None:
                                break
                            chain.append(cur.get_DIE_from_attribute(ref))
                        name = _first(chain, "DW_AT_name")
                        link = _first(chain, "DW_AT_linkage_name")
                        fileno = _first(chain, "DW_AT_decl_file")
                        line = _first(chain, "DW_AT_decl_line")
                        self.by_addr[die.attributes["DW_AT_low_pc"].value] = SourceFunction(
                            name.decode(errors="replace") if name else None,
                            link.decode(errors="replace") if link else None,
                            _file_name(lineprog, fileno, version), line)
        except (OSError, ELFError, DWARFError, KeyError, AttributeError, ValueError):
            # Damaged or exotic debug info: names still come from ELF symbols.
            pass

    def get(self, vaddr: int) -> SourceFunction | None:
        return self.by_addr.get(vaddr)


@per_file(maxsize=64)
def dwarf_functions(path: str) -> DwarfFunctions:
    return DwarfFunctions(path)
