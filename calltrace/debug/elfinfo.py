"""What calltrace debug needs from the program's ELF file, read once.

pyelftools gives the symbols, relocations and sections; capstone decodes
machine code to find (a) the calls of the -finstrument-functions hooks inside
chosen functions, through a PLT stub or straight through the GOT
(-fno-plt), and (b) the `ret` instructions and tail-call jumps where a
function of an uninstrumented program returns.
"""
from __future__ import annotations

import bisect
import re
from typing import NamedTuple

import capstone
from elftools.common.exceptions import ELFError
from elftools.elf.elffile import ELFFile
from elftools.elf.relocation import RelocationSection
from elftools.elf.sections import SymbolTableSection

from ..errors import CalltraceError

HOOKS = {"__cyg_profile_func_enter": "E", "__cyg_profile_func_exit": "X"}


class Function(NamedTuple):
    addr: int
    size: int
    name: str


class Site(NamedTuple):
    addr: int       # ELF address of the instruction
    kind: str       # "E"/"X" for hook calls; "X" for `ret`s, "T" tail jumps, "J:reg" maybe-tail jumps
    fn: int         # entry address of the function containing it


class ElfInfo:
    def __init__(self, path: str):
        self.path = path
        try:
            self._f = open(path, "rb")
            self.elf = ELFFile(self._f)
        except (ELFError, OSError) as e:
            raise CalltraceError(f"{path} is not an ELF executable ({e})") from None
        if self.elf["e_machine"] != "EM_X86_64":
            raise CalltraceError(f"{path}: only x86-64 programs are supported")
        self.entry = self.elf["e_entry"]
        self.dynamic = any(s["p_type"] == "PT_INTERP" for s in self.elf.iter_segments())
        self.has_dwarf = self.elf.get_section_by_name(".debug_info") is not None
        loads = [(s["p_vaddr"], s["p_vaddr"] + s["p_memsz"]) for s in self.elf.iter_segments()
                 if s["p_type"] == "PT_LOAD"]
        self.span = (min(a for a, _ in loads), max(b for _, b in loads)) if loads else (0, 0)
        self.functions = self._functions()
        self._starts = [f.addr for f in self.functions]
        self.imports = self._imports()
        self.slots = self._got_slots()
        self._md = capstone.Cs(capstone.CS_ARCH_X86, capstone.CS_MODE_64)
        self._md.detail = True
        self.stubs = self._plt_stubs()

    def close(self) -> None:
        self._f.close()

    @property
    def instrumented(self) -> bool:
        return "__cyg_profile_func_enter" in self.imports

    def _functions(self) -> list[Function]:
        seen: dict[int, Function] = {}
        for name in (".symtab", ".dynsym"):
            sec = self.elf.get_section_by_name(name)
            if not isinstance(sec, SymbolTableSection):
                continue
            for sym in sec.iter_symbols():
                if (sym["st_info"]["type"] == "STT_FUNC" and sym["st_value"]
                        and sym["st_shndx"] != "SHN_UNDEF" and sym.name):
                    a = sym["st_value"]
                    if a not in seen or (sym["st_info"]["bind"] == "STB_GLOBAL"):
                        seen[a] = Function(a, sym["st_size"], sym.name.split("@")[0])
        return sorted(seen.values())

    def _imports(self) -> set[str]:
        sec = self.elf.get_section_by_name(".dynsym")
        if not isinstance(sec, SymbolTableSection):
            return set()
        return {s.name.split("@")[0] for s in sec.iter_symbols() if s["st_shndx"] == "SHN_UNDEF"}

    def _got_slots(self) -> dict[int, str]:
        """GOT slot address -> name of the symbol the loader writes there."""
        slots = {}
        for sec in self.elf.iter_sections():
            if not isinstance(sec, RelocationSection):
                continue
            symtab = self.elf.get_section(sec["sh_link"])
            if not isinstance(symtab, SymbolTableSection):
                continue
            for rel in sec.iter_relocations():
                if rel["r_info_sym"]:
                    name = symtab.get_symbol(rel["r_info_sym"]).name
                    if name in HOOKS:
                        slots[rel["r_offset"]] = name
        return slots

    def _plt_stubs(self) -> dict[int, str]:
        """PLT stub address -> hook name, by decoding each stub's jump."""
        stubs = {}
        for name in (".plt", ".plt.sec", ".plt.got"):
            sec = self.elf.get_section_by_name(name)
            if sec is None:
                continue
            for insn in self._md.disasm(sec.data(), sec["sh_addr"]):
                slot = self._rip_target(insn)
                if insn.mnemonic.endswith("jmp") and slot in self.slots:
                    # a stub starts on a 16-byte boundary (.plt.sec: endbr64 first)
                    stubs[insn.address & ~0xF] = self.slots[slot]
        return stubs

    @staticmethod
    def _rip_target(insn) -> int | None:
        for op in insn.operands:
            if op.type == capstone.x86.X86_OP_MEM and op.mem.base == capstone.x86.X86_REG_RIP:
                return insn.address + insn.size + op.mem.disp
        return None

    def _code(self, fn: Function) -> bytes:
        for sec in self.elf.iter_sections():
            start = sec["sh_addr"]
            if sec["sh_type"] == "SHT_PROGBITS" and start <= fn.addr < start + sec["sh_size"]:
                off = fn.addr - start
                return sec.data()[off:off + fn.size]
        return b""

    def select(self, include: str | None, exclude: str | None) -> list[Function]:
        """Functions whose name matches include (re.search) and not exclude."""
        try:
            inc = re.compile(include) if include else None
            exc = re.compile(exclude) if exclude else None
        except re.error as e:
            raise CalltraceError(f"bad regular expression: {e}") from None
        return [f for f in self.functions
                if f.size and (inc is None or inc.search(f.name))
                and not (exc and exc.search(f.name))]

    def hook_sites(self, funcs: list[Function]) -> list[Site]:
        """Every call of a hook inside funcs: `call stub` or `call [rip+slot]`."""
        out = []
        for fn in funcs:
            for insn in self._md.disasm(self._code(fn), fn.addr):
                if insn.mnemonic != "call":
                    continue
                name = None
                op = insn.operands[0] if insn.operands else None
                if op is not None and op.type == capstone.x86.X86_OP_IMM:
                    name = self.stubs.get(op.imm)
                else:
                    name = self.slots.get(self._rip_target(insn))
                if name:
                    out.append(Site(insn.address, HOOKS[name], fn.addr))
        return out

    def return_sites(self, fn: Function) -> list[Site]:
        """The `ret`s of fn, and its jumps out of itself (tail calls)."""
        out = []
        end = fn.addr + fn.size
        for insn in self._md.disasm(self._code(fn), fn.addr):
            m = insn.mnemonic
            if m in ("ret", "retq", "bnd ret"):
                out.append(Site(insn.address, "X", fn.addr))
            elif m in ("jmp", "bnd jmp", "notrack jmp") and insn.operands:
                op = insn.operands[0]
                if op.type == capstone.x86.X86_OP_IMM and not (fn.addr <= op.imm < end):
                    # a jump to another function's entry; not to a .cold part
                    t = self.containing(op.imm)
                    if t is not None and t.addr == op.imm and ".cold" not in t.name:
                        out.append(Site(insn.address, "T", fn.addr))
                elif self._rip_target(insn) is not None:
                    out.append(Site(insn.address, "T", fn.addr))     # jmp [GOT]: -fno-plt
                elif op.type == capstone.x86.X86_OP_REG:
                    # a switch's jump table or a tail call through a pointer:
                    # decided at the stop, by where the register points
                    out.append(Site(insn.address, "J:" + insn.reg_name(op.reg), fn.addr))
        return out

    def containing(self, addr: int) -> Function | None:
        i = bisect.bisect_right(self._starts, addr) - 1
        if i >= 0:
            f = self.functions[i]
            if f.addr <= addr < f.addr + max(f.size, 1):
                return f
        return None
