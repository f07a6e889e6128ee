"""Reading an ELF file: its function symbols (indexed once for bisect
lookups), what kind of program it is, and whether it was built with
-finstrument-functions. Machine code is symbols/code.py's."""
from __future__ import annotations

import bisect
import struct
from dataclasses import dataclass
from functools import lru_cache

from elftools.common.exceptions import ELFError
from elftools.elf.elffile import ELFFile

from ..errors import CalltraceError
from ..files import starts_with
from .cache import per_file

_BIND_RANK = {1: 0, 2: 1, 0: 2}       # STB_GLOBAL, STB_WEAK, STB_LOCAL
STT_FUNC, SHN_UNDEF = 2, 0
# Not STT_GNU_IFUNC (10): such a symbol names an ifunc's resolver, and the
# names traces carry have always come from the STT_FUNC symbols alone.
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
        self.machine = ""
        self.entry = 0
        self.span = (0, 0)              # lowest and highest address of its PT_LOAD segments
        self.text_addr: int | None = None
        syms: dict[int, tuple[int, Symbol]] = {}
        try:
            with open(path, "rb") as f:
                elf = ELFFile(f)
                self.pie = elf.header["e_type"] == "ET_DYN"
                self.dynamic = any(seg["p_type"] == "PT_INTERP" for seg in elf.iter_segments())
                self.machine = elf["e_machine"]
                self.entry = elf["e_entry"]
                loads = [(g["p_vaddr"], g["p_vaddr"] + g["p_memsz"]) for g in elf.iter_segments()
                         if g["p_type"] == "PT_LOAD"]
                if loads:
                    self.span = (min(a for a, _ in loads), max(b for _, b in loads))
                text = elf.get_section_by_name(".text")
                self.text_addr = text["sh_addr"] if text is not None else None
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
                    for name, info, shndx, value, size in _raw_symbols(elf, sec):
                        if shndx == SHN_UNDEF and name == HOOK:
                            self.imports_hook = True
                        if info & 0xf != STT_FUNC:
                            continue
                        if shndx == SHN_UNDEF or not value or not name:
                            continue
                        rank = _BIND_RANK.get(info >> 4, 3)
                        old = syms.get(value)
                        if old is None or rank < old[0]:
                            syms[value] = (rank, Symbol(name, value, size))
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


def _raw_symbols(elf: ELFFile, sec):
    """(name, st_info, st_shndx, st_value, st_size) of each entry of a symbol
    table, unpacked at once rather than parsed one by one (a program's
    table can hold tens of thousands)."""
    if sec["sh_type"] == "SHT_NOBITS":     # a debug file's stub of a stripped table
        return
    size, step = (24 if elf.elfclass == 64 else 16), sec["sh_entsize"]
    if step < size:
        raise ELFError(f"{sec.name}: symbol entries of {step} bytes")
    data = sec.data()
    strtab = elf.get_section(sec["sh_link"]).data()
    # Elf64_Sym: name, info, other, shndx, value, size; Elf32_Sym: name, value, size, info, other, shndx
    fmt = struct.Struct(("<" if elf.little_endian else ">") + ("IBBHQQ" if size == 24 else "IIIBBH"))
    entries = (fmt.iter_unpack(data[:len(data) // size * size]) if step == size else
               (fmt.unpack_from(data, off) for off in range(0, len(data) - size + 1, step)))
    for entry in entries:
        if size == 24:
            st_name, info, _, shndx, value, sym_size = entry
        else:
            st_name, value, sym_size, info, _, shndx = entry
        name = ""
        if st_name:
            stop = strtab.find(b"\0", st_name)
            name = strtab[st_name:stop if stop >= 0 else len(strtab)].decode("utf-8", "replace")
        yield name, info, shndx, value, sym_size


@per_file(maxsize=64)
def elf_symbols(path: str) -> ElfSymbols:
    return ElfSymbols(path)


def is_elf(path: str) -> bool:
    """The file begins as an ELF file does (False when it cannot be read)."""
    return starts_with(path, b"\x7fELF")


def is_dynamic(path: str) -> bool:
    """True when the program has an interpreter (PT_INTERP): the dynamic
    loader, and so LD_PRELOAD, apply. Reads the program headers only;
    raises CalltraceError as elf_symbols does."""
    try:
        with open(path, "rb") as f:
            return any(seg["p_type"] == "PT_INTERP" for seg in ELFFile(f).iter_segments())
    except (OSError, ELFError, ValueError) as e:
        raise CalltraceError(f"cannot read ELF file {path}: {e}") from None


def is_library(path: str) -> bool:
    """A shared library rather than a program: position independent, no
    interpreter, and not marked PIE (a static-pie program is). False when it
    cannot be read."""
    try:
        with open(path, "rb") as f:
            elf = ELFFile(f)
            if elf["e_type"] != "ET_DYN" or any(seg["p_type"] == "PT_INTERP" for seg in elf.iter_segments()):
                return False
            dyn = elf.get_section_by_name(".dynamic")
            flags = [t["d_val"] for t in dyn.iter_tags() if t["d_tag"] == "DT_FLAGS_1"] if dyn else []
            return not any(v & 0x08000000 for v in flags)       # DF_1_PIE
    except (OSError, ELFError, ValueError, KeyError):
        return False


@lru_cache(maxsize=256)
def is_instrumented(path: str) -> bool:
    """True when the program or library was built with -finstrument-functions
    (it calls the hooks, defined elsewhere). The hook is an undefined dynamic
    symbol, which the GNU hash table leaves out: the raw .dynsym entries are
    scanned for its name instead of parsed one by one (a program linked with
    -rdynamic exports thousands); a static program has only .symtab."""
    try:
        with open(path, "rb") as f:
            elf = ELFFile(f)
            sec = elf.get_section_by_name(".dynsym")
            if sec is not None:
                names = elf.get_section(sec["sh_link"]).data()
                want = HOOK.encode() + b"\0"
                # any place the name starts (string tables share suffixes)
                at, i = set(), names.find(want)
                while i >= 0:
                    at.add(i)
                    i = names.find(want, i + 1)
                fmt, name_at, shndx_at = ("IBBHQQ", 0, 3) if elf.elfclass == 64 else ("IIIBBH", 0, 5)
                order = "<" if elf.little_endian else ">"
                return bool(at) and any(e[name_at] in at and e[shndx_at] == 0
                                        for e in struct.iter_unpack(order + fmt, sec.data()))
    except (OSError, ELFError, ValueError, KeyError, struct.error):
        return False
    return elf_symbols(path).imports_hook
