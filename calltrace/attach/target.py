"""The process `calltrace attach` is asked to trace: checks that give one
clear line each, its loaded modules, the GOT entries its instrumented
modules call the hooks through, and which of its frames were open at attach.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field

from elftools.elf.elffile import ELFFile

from ..errors import CalltraceError
from ..symbols.code import HOOKS, Code
from ..symbols.elf import elf_symbols, is_elf, is_instrumented

ENTER, EXIT = "__cyg_profile_func_enter", "__cyg_profile_func_exit"


class ElfInfo:
    """What attach needs of one ELF file: symbols, GOT slots, hook calls."""

    def __init__(self, path: str):
        self.syms = elf_symbols(path)
        self._file = open(path, "rb")   # sections are read lazily: open while this lives
        self.code = Code(ELFFile(self._file), self.syms.lookup)
        self.slots = self.code.slots
        self.entry, self.span, self.dynamic = self.syms.entry, self.syms.span, self.syms.dynamic
        self.functions = self.syms.functions()

    def containing(self, addr: int):
        return self.syms.lookup(addr)

    def hook_sites(self, funcs):
        return self.code.hook_sites(funcs)


@dataclass
class Module:
    path: str
    lo: int             # mapped range
    hi: int
    bias: int = 0
    info: ElfInfo | None = None
    slots: dict[str, list[int]] = field(default_factory=dict)   # hook -> runtime GOT addresses
    _sites: dict[int, tuple[int | None, list[int]]] = field(default_factory=dict)

    def sites(self, fn) -> tuple[int | None, list[int]]:
        """(the enter hook call's address, the exit hook calls' addresses) of
        a function, at link-time addresses."""
        if fn.start not in self._sites:
            found = self.info.hook_sites([fn])
            enters = [s.addr for s in found if s.kind == "E"]
            self._sites[fn.start] = (min(enters) if enters else None,
                                     [s.addr for s in found if s.kind == "X"])
        return self._sites[fn.start]


def _status(pid: int) -> dict[str, str]:
    try:
        with open(f"/proc/{pid}/status") as f:
            return dict(line.rstrip("\n").split(":\t", 1) for line in f if ":\t" in line)
    except FileNotFoundError:
        raise CalltraceError(f"no process with pid {pid}", 1) from None


def ptrace_scope() -> int | None:
    try:
        with open("/proc/sys/kernel/yama/ptrace_scope") as f:
            return int(f.read().strip())
    except (OSError, ValueError):
        return None


def not_permitted(pid: int, why: str = "") -> CalltraceError:
    scope = ptrace_scope()
    if scope == 3:
        hint = ("kernel.yama.ptrace_scope is 3: attaching is disabled until the next reboot; "
                "start the program under `calltrace run` instead")
    elif scope and os.geteuid() != 0:
        hint = (f"kernel.yama.ptrace_scope is {scope}: only root (or CAP_SYS_PTRACE) may attach to a "
                "process that is not its child; run calltrace with sudo, or allow it with "
                "`echo 0 | sudo tee /proc/sys/kernel/yama/ptrace_scope`")
    else:
        hint = "run calltrace as the user who owns the process, or as root"
    return CalltraceError(f"not permitted to attach to process {pid}{why}: {hint}", 1)


def check_process(pid: int) -> str:
    """The program's real path, after the checks that need no debugger."""
    if not 0 < pid < 2**31:     # pid_t: a larger one overflows os.kill
        raise CalltraceError(f"{pid} is not a process id", 2)
    if pid == os.getpid():
        raise CalltraceError("calltrace cannot attach to itself", 2)
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        raise CalltraceError(f"no process with pid {pid}", 1) from None
    except PermissionError:
        raise not_permitted(pid, " (it belongs to another user)") from None
    st = _status(pid)
    if st.get("State", "").startswith(("Z", "X")):
        raise CalltraceError(f"process {pid} has already exited (a zombie waiting for its parent)", 1)
    if st.get("State", "").startswith("T"):
        raise CalltraceError(f"process {pid} is stopped (SIGSTOP, Ctrl-Z): attaching would let it run; "
                             f"continue it first (kill -CONT {pid})", 1)
    tracer = int(st.get("TracerPid", "0") or 0)
    if tracer:
        raise CalltraceError(f"process {pid} is already being traced by process {tracer} (a debugger, "
                             "strace or another calltrace): detach that first", 1)
    try:
        exe = os.path.realpath(f"/proc/{pid}/exe", strict=True)
    except OSError as e:
        if isinstance(e, PermissionError):
            raise not_permitted(pid) from None
        raise CalltraceError(f"cannot read the program of process {pid}: {e.strerror}", 1) from None
    if ptrace_scope() == 3:
        raise not_permitted(pid)
    return exe


def modules(pid: int) -> list[Module]:
    """File-backed ELF objects mapped in the process, with their load bias."""
    spans: dict[str, list[int]] = {}
    head: dict[str, int] = {}    # path -> where its file offset 0 is mapped
    with open(f"/proc/{pid}/maps") as f:
        for line in f:
            parts = line.split(maxsplit=5)
            if len(parts) < 6 or not parts[5].startswith("/"):
                continue
            path = parts[5].rstrip("\n")
            if path.endswith(" (deleted)"):
                continue
            lo, hi = (int(x, 16) for x in parts[0].split("-"))
            off = int(parts[2], 16)
            s = spans.setdefault(path, [lo, hi])
            s[0], s[1] = min(s[0], lo), max(s[1], hi)
            if off == 0 and (path not in head or lo < head[path]):
                head[path] = lo
    return [Module(path, lo, hi, head.get(path, lo)) for path, (lo, hi) in spans.items()]


_INFOS: dict[str, ElfInfo] = {}


def load(mod: Module) -> bool:
    """Read mod's ELF; False when it is not one (a data file mapped)."""
    try:
        if not is_elf(mod.path):
            return False
        if mod.path not in _INFOS:
            _INFOS[mod.path] = ElfInfo(mod.path)
        mod.info = _INFOS[mod.path]
    except (OSError, CalltraceError):
        return False
    # `bias` holds where file offset 0 is mapped: the first PT_LOAD's page.
    mod.bias -= mod.info.span[0] & ~0xfff
    for addr, name in mod.info.slots.items():
        mod.slots.setdefault(name, []).append(mod.bias + addr)
    return True


def libc_hooks(pid: int) -> dict[str, int]:
    """Where glibc's own (empty) hooks are in the process (both names are
    one function there, so looked up by name, not through ElfInfo)."""
    for m in modules(pid):
        if os.path.basename(m.path).startswith("libc.so") and load(m):
            with open(m.path, "rb") as f:
                dynsym = ELFFile(f).get_section_by_name(".dynsym")
                found = {}
                for name in (ENTER, EXIT):
                    syms = [s for s in dynsym.get_symbol_by_name(name) or [] if s["st_value"]]
                    if syms:
                        found[name] = m.bias + syms[0]["st_value"]
            if len(found) == 2:
                return found
    raise CalltraceError(f"cannot find glibc's __cyg_profile_func_enter in process {pid}", 1)


def entry_point(pid: int, exe: str) -> int:
    """The program's entry point where it is loaded: calls into the process
    return there (it never runs again after start-up)."""
    for m in modules(pid):
        if os.path.realpath(m.path) == exe and load(m):
            return m.bias + m.info.entry
    raise CalltraceError(f"cannot read the program of process {pid} ({exe})", 1)


def instrumented_modules(pid: int, exe: str, runtime: str) -> list[Module]:
    """The loaded modules that call the hooks through a GOT entry; a clear
    error when there is none, or the program is statically linked."""
    mods = [m for m in modules(pid) if os.path.realpath(m.path) != os.path.realpath(runtime)]
    main = next((m for m in mods if os.path.realpath(m.path) == exe), None)
    if main is None or not load(main):
        raise CalltraceError(f"cannot read the program of process {pid} ({exe})", 1)
    if not main.info.dynamic:
        raise CalltraceError(
            f"{exe} is statically linked: it has no dynamic loader to load the recorder with, and its "
            "hook calls go straight to its own copy of __cyg_profile_func_enter, not through a GOT entry "
            "calltrace could point at the recorder"
            f"; relink it dynamically, or trace chosen functions with `calltrace debug --pid {pid} "
            "--uninstrumented -F REGEX`", 1)
    out = []
    for m in mods:
        if m is main or (is_instrumented(m.path) and load(m)):
            if ENTER in m.slots and EXIT in m.slots:
                out.append(m)
    if not out:
        own = any(f.name in HOOKS for f in main.info.functions)
        why = (" (it defines the hooks itself: they are called directly, not through a GOT entry)"
               if own else "")
        raise CalltraceError(
            f"process {pid} ({os.path.basename(exe)}) is not instrumented{why}: no module it has "
            "loaded calls __cyg_profile_func_enter through a GOT entry. Rebuild it with "
            f"-finstrument-functions, or trace chosen functions with `calltrace debug --pid {pid} "
            "--uninstrumented -F REGEX`", 1)
    return out


def open_frames(threads: list[dict], mods: list[Module]) -> dict[int, list[int]]:
    """Per thread id, the entry addresses of the instrumented calls it is
    inside (outermost first): frames whose entry hook has run and whose exit
    hook has not. Callers' frames stand at a return address, so only a
    frame stopped right after an exit hook call is left out; the innermost
    frame stands anywhere: after its entry call, not just after an exit call."""
    out = {}
    for th in threads:
        fns = []
        pcs = th["pcs"]
        for k, pc in enumerate(pcs):
            m = next((m for m in mods if m.lo <= pc < m.hi), None)
            if m is None:
                continue
            a = pc - m.bias
            fn = m.info.containing(a if k == 0 else a - 1)
            if fn is None:
                continue
            if fn.name.endswith(".cold") or ".cold." in fn.name:
                # the cold part of a function runs after its entry hook
                parent = next((f for f in m.info.functions if f.name == fn.name.split(".cold")[0]), None)
                if parent is not None and m.sites(parent)[0] is not None:
                    fns.append(m.bias + parent.start)
                continue
            enter, exits = m.sites(fn)
            if enter is None or a <= enter:
                continue
            if k == 0 and any(x < a <= x + 48 for x in exits):
                continue   # stopped in the epilogue, after the exit hook
            if k > 0 and any(a - x in (5, 6) for x in exits):
                continue   # inside the exit hook itself
            fns.append(m.bias + fn.start)
        out[th["tid"]] = fns[::-1]
    return out
