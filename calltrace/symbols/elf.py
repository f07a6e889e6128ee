"""Function symbols of one ELF file, indexed once for bisect lookups."""
from __future__ import annotations

import bisect
from dataclasses import dataclass
from functools import lru_cache

from elftools.common.exceptions import ELFError
from elftools.elf.elffile import ELFFile

from ..errors import CalltraceError

_BIND_RANK = {"STB_GLOBAL": 0, "STB_WEAK": 1, "STB_LOCAL": 2}
HOOK = "__cyg_profile_func_enter"


@dataclass(frozen=True)
class Symbol:
    name: str
    start: int
    size: int


class ElfSymbols:
    """`lookup(vaddr)`: the function symbol covering a link-time address."""

    def __init__(self, path: str):
        self.path = path
        self.pie = False
        self.build_id: str | None = None
        self.imports_hook = False
        self.has_debug_info = False
        self.dynamic = False
        syms: dict[int, tuple[int, Symbol]] = {}
        try:
            with open(path, "rb") as f:
                elf = ELFFile(f)
                self.pie = elf.header["e_type"] == "ET_DYN"
                self.dynamic = any(seg["p_type"] == "PT_INTERP" for seg in elf.iter_segments())
                self.has_debug_info = elf.has_dwarf_info() and elf.get_section_by_name(".debug_info") is not None
                note = elf.get_section_by_name(".note.gnu.build-id")
                if note is not None:
                    for n in note.iter_notes():
                        if n["n_type"] == "NT_GNU_BUILD_ID":
                            self.build_id = n["n_desc"]
                for secname in (".symtab", ".dynsym"):
                    sec = elf.get_section_by_name(secname)
                    if sec is None:
                        continue
                    for s in sec.iter_symbols():
                        if s.name == HOOK and s["st_shndx"] == "SHN_UNDEF":
                            self.imports_hook = True
                        if s["st_info"]["type"] not in ("STT_FUNC", "STT_GNU_IFUNC"):
                            continue
                        if s["st_shndx"] == "SHN_UNDEF" or not s["st_value"] or not s.name:
                            continue
                        rank = _BIND_RANK.get(s["st_info"]["bind"], 3)
                        old = syms.get(s["st_value"])
                        if old is None or rank < old[0]:
                            syms[s["st_value"]] = (rank, Symbol(s.name, s["st_value"], s["st_size"]))
        except (OSError, ELFError, ValueError) as e:
            raise CalltraceError(f"cannot read ELF file {path}: {e}") from None
        self._syms = [v[1] for _, v in sorted(syms.items())]
        self._starts = [s.start for s in self._syms]

    def functions(self) -> list[Symbol]:
        return list(self._syms)

    def lookup(self, vaddr: int) -> Symbol | None:
        i = bisect.bisect_right(self._starts, vaddr) - 1
        if i < 0:
            return None
        s = self._syms[i]
        if vaddr == s.start or vaddr < s.start + s.size:
            return s
        return None


@lru_cache(maxsize=64)
def elf_symbols(path: str) -> ElfSymbols:
    return ElfSymbols(path)


def check_instrumented(path: str) -> bool:
    """True when the program calls the -finstrument-functions hooks."""
    return elf_symbols(path).imports_hook
