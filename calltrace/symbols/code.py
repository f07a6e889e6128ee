"""Machine code of an ELF file, decoded with capstone: where a function calls
the -finstrument-functions hooks, and where it returns.

A hook call is `call stub` (through a PLT stub whose jump reads the hook's
GOT slot), `call [rip+slot]` (-fno-plt) or `call hook` (a static program
that defines the hooks). Only a call whose target is the hook counts: the
first call of a function is not always the entry hook's (a stack protector
or a profiling call can come first). Used by the capture plan (the return
addresses of the entry hook calls, symbols/plan.py) and by `calltrace debug`
(breakpoints on hook calls and on returns)."""
from __future__ import annotations

from typing import NamedTuple

import capstone
from elftools.elf.elffile import ELFFile
from elftools.elf.relocation import RelocationSection
from elftools.elf.sections import SymbolTableSection

from .elf import Symbol

HOOKS = {"__cyg_profile_func_enter": "E", "__cyg_profile_func_exit": "X"}


class Site(NamedTuple):
    addr: int       # ELF address of the instruction
    kind: str       # "E"/"X" for hook calls; "X" for `ret`s, "T" tail jumps, "J:reg" maybe-tail jumps
    fn: int         # entry address of the function containing it


class Code:
    """`elf` stays open while this is used; `containing(addr)` (the symbol
    covering an address, e.g. ElfSymbols.lookup) is needed by return_sites."""

    def __init__(self, elf: ELFFile, containing=None):
        self.elf = elf
        self.containing = containing
        self._md = capstone.Cs(capstone.CS_ARCH_X86, capstone.CS_MODE_64)
        self._md.detail = True
        self._text = [s for s in elf.iter_sections()
                      if s["sh_flags"] & 0x4 and s["sh_type"] == "SHT_PROGBITS"]
        self.slots = self._got_slots()
        self.targets = {**self._plt_stubs(), **self._defined()}

    def _got_slots(self) -> dict[int, str]:
        """GOT slot address -> name of the hook the loader writes there."""
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

    def _defined(self) -> dict[int, str]:
        """The hooks' own addresses when this file defines them (static)."""
        sec = self.elf.get_section_by_name(".symtab")
        if not isinstance(sec, SymbolTableSection):
            return {}
        return {s["st_value"]: name for name in HOOKS for s in sec.get_symbol_by_name(name) or []
                if s["st_shndx"] != "SHN_UNDEF" and s["st_value"]}

    @staticmethod
    def _rip_target(insn) -> int | None:
        for op in insn.operands:
            if op.type == capstone.x86.X86_OP_MEM and op.mem.base == capstone.x86.X86_REG_RIP:
                return insn.address + insn.size + op.mem.disp
        return None

    def _bytes(self, lo: int, hi: int) -> bytes:
        for sec in self._text:
            start = sec["sh_addr"]
            if start <= lo < start + sec["sh_size"]:
                return sec.data()[lo - start:min(hi, start + sec["sh_size"]) - start]
        return b""

    def _hook_of(self, insn) -> str | None:
        """The hook a `call` instruction calls, or None."""
        if insn.mnemonic != "call" or not insn.operands:
            return None
        op = insn.operands[0]
        if op.type == capstone.x86.X86_OP_IMM:
            return self.targets.get(op.imm)
        return self.slots.get(self._rip_target(insn))

    def hook_calls(self, lo: int, hi: int, fn: int | None = None) -> list[Site]:
        """Every hook call in [lo, hi)."""
        return [Site(insn.address, HOOKS[name], lo if fn is None else fn)
                for insn in self._md.disasm(self._bytes(lo, hi), lo)
                if (name := self._hook_of(insn)) is not None]

    def entry_hook_calls(self, lo: int, hi: int) -> list[tuple[int, int]]:
        """(address, return address) of each call of the entry hook in
        [lo, hi): the capture plan gives each to the innermost inlined copy
        whose code holds it."""
        return [(insn.address, insn.address + insn.size) for insn in self._md.disasm(self._bytes(lo, hi), lo)
                if self._hook_of(insn) == "__cyg_profile_func_enter"]

    def hook_sites(self, funcs: list[Symbol]) -> list[Site]:
        """Every hook call inside funcs."""
        return [s for fn in funcs for s in self.hook_calls(fn.start, fn.start + fn.size)]

    def return_sites(self, fn: Symbol) -> list[Site]:
        """The `ret`s of fn, and its jumps out of itself (tail calls)."""
        out = []
        end = fn.start + fn.size
        for insn in self._md.disasm(self._bytes(fn.start, end), fn.start):
            m = insn.mnemonic
            if m in ("ret", "retq", "bnd ret"):
                out.append(Site(insn.address, "X", fn.start))
            elif m in ("jmp", "bnd jmp", "notrack jmp") and insn.operands:
                op = insn.operands[0]
                if op.type == capstone.x86.X86_OP_IMM and not (fn.start <= op.imm < end):
                    # a jump to another function's entry; not to a .cold part
                    t = self.containing(op.imm) if self.containing else None
                    if t is not None and t.start == op.imm and ".cold" not in t.name:
                        out.append(Site(insn.address, "T", fn.start))
                elif self._rip_target(insn) is not None:
                    out.append(Site(insn.address, "T", fn.start))     # jmp [GOT]: -fno-plt
                elif op.type == capstone.x86.X86_OP_REG:
                    # a switch's jump table or a tail call through a pointer:
                    # decided at the stop, by where the register points
                    out.append(Site(insn.address, "J:" + insn.reg_name(op.reg), fn.start))
        return out
