"""Run-time addresses to function names, using the module map the runtime
recorded (so PIE executables and shared libraries resolve)."""
from __future__ import annotations

import bisect
import os
from dataclasses import dataclass

from ..errors import CalltraceError
from .demangle import demangle
from .dwarf import dwarf_functions
from .elf import elf_symbols


@dataclass(frozen=True)
class Module:
    """A module mapped in the traced process: run-time = link-time + bias."""
    bias: int
    lo: int
    hi: int
    path: str


@dataclass
class FunctionInfo:
    address: int
    function: str          # display name, unique within one trace
    symbol: str | None     # raw symbol (mangled for C++)
    module: str | None
    file: str | None
    line: int | None


class Resolver:
    """`timeline`: the module map over time (symbols/timeline.py), when the
    runtime recorded it; then a key (addr, era) names the era's library."""

    def __init__(self, modules: list[Module], timeline=None):
        self.modules = sorted(modules, key=lambda m: m.lo)
        self._los = [m.lo for m in self.modules]
        self.timeline = timeline
        self.notes: list[str] = [] if timeline else [_reused_note(a, b) for a, b in _overlaps(self.modules)]

    def module_of(self, addr: int) -> Module | None:
        i = bisect.bisect_right(self._los, addr) - 1
        if i >= 0 and addr < self.modules[i].hi:
            return self.modules[i]
        return None

    def resolve(self, keys: list) -> dict:
        """FunctionInfo per key: an address, or (address, era)."""
        from .timeline import module_at      # timeline.py imports Module from here
        out: dict = {}
        no_debug: set[str] = set()
        for key in keys:
            addr, era = key if isinstance(key, tuple) else (key, 0)
            mod = module_at(self.timeline, addr, era) if self.timeline else None
            if mod is None:
                mod = self.module_of(addr)
            out[key] = self._info(addr, mod, no_debug)
        for path in sorted(no_debug):
            self.notes.append(f"{path} has no DWARF debug info (build with -g): no file:line")
        self._demangle(out)
        self._make_unique(out)
        return out

    def _info(self, addr: int, mod: Module | None, no_debug: set[str]) -> FunctionInfo:
        if mod is None:
            return FunctionInfo(addr, f"0x{addr:x}", None, None, None, None)
        vaddr = addr - mod.bias
        name = sym = file = line = None
        try:
            syms = elf_symbols(mod.path)
            s = syms.lookup(vaddr)
            if s is not None:
                sym = s.name
                name = s.name if s.start == vaddr else f"{s.name}+0x{vaddr - s.start:x}"
            src = dwarf_functions(mod.path).get(vaddr)
            if src is not None:
                file, line = src.file, src.line
                if name is None:
                    sym = src.linkage_name or src.name
                    name = sym
            elif not syms.has_debug_info:
                no_debug.add(mod.path)
        except CalltraceError as e:
            self.notes.append(str(e))
        if name is None:
            name = f"{os.path.basename(mod.path)}+0x{vaddr:x}"
        return FunctionInfo(addr, name, sym, mod.path, file, line)

    @staticmethod
    def _demangle(infos: dict[int, FunctionInfo]) -> None:
        table = demangle([i.function for i in infos.values()])
        for info in infos.values():
            if info.function in table:
                info.function = table[info.function]

    @staticmethod
    def _make_unique(infos: dict[int, FunctionInfo]) -> None:
        by_name: dict[str, list[FunctionInfo]] = {}
        for info in infos.values():
            by_name.setdefault(info.function, []).append(info)
        for name, group in by_name.items():
            if len(group) < 2:
                continue
            for info in group:
                where = (os.path.basename(info.file) if info.file else
                         os.path.basename(info.module) if info.module else None)
                info.function = f"{name} [{where}]" if where else f"{name} [0x{info.address:x}]"
            if len({i.function for i in group}) < len(group):
                for info in group:
                    info.function = f"{name} [0x{info.address:x}]"
            if len({i.function for i in group}) < len(group):
                # one address, several libraries over the run: number the loads
                for n, info in enumerate(group, 1):
                    info.function = f"{name} [0x{info.address:x} #{n}]"


def _overlaps(modules: list[Module]) -> list[tuple[Module, Module]]:
    """Pairs of different objects recorded at overlapping addresses (sorted
    by start): one was dlclose'd and the other loaded where it had been."""
    out = []
    for i, a in enumerate(modules):
        for b in modules[i + 1:]:
            if b.lo >= a.hi:
                break
            if b.path != a.path:
                out.append((a, b))
    return out


def _reused_note(a: Module, b: Module) -> str:
    # The module map has no times, so each address gets one name for the
    # whole run; say so rather than name some calls wrongly without a word.
    return (f"{os.path.basename(a.path)} and {os.path.basename(b.path)} were loaded at overlapping "
            f"addresses one after the other (dlclose, then dlopen): calls in 0x{max(a.lo, b.lo):x}-"
            f"0x{min(a.hi, b.hi):x} are all named after one of them, so some may carry the other's names")
