"""Capture plans: which bytes the runtime copies at each function's entry hook.

For every function with DWARF parameters, at the instruction after its call
to __cyg_profile_func_enter (found with capstone), we look up

- the CFA rule there (call frame information), and
- where each parameter lives there (DWARF location lists): in a callee-saved
  register, or in memory relative to the CFA, rsp or a callee-saved register.

At that point only callee-saved registers and memory still hold the
function's values: the hook call clobbered the rest, and DWARF knows it, so a
value the compiler kept only in a clobbered register is honestly "optimized
out". The runtime copies exactly the planned bytes (runtime/capture.c);
values.py decodes them after the run. The binary layout written by
`serialize` is read by capture.c: keep both in step."""
from __future__ import annotations

import bisect
import os
import struct
from dataclasses import dataclass, field
from functools import lru_cache

from elftools.common.exceptions import DWARFError, ELFError
from elftools.elf.elffile import ELFFile

from . import ranges
from .code import Code
from .ctypes_dwarf import ARRAY, BASE, ENUM, POINTER, STRUCT, UNION, CType, TypeReader
from .locations import (BASE_CFA, BASE_RSP, MEM_CAP, OP_DEREF, OP_FOLLOW, OP_MEM, OP_SITE, OP_STRING, SAVED,
                        LocationReader, Op, _EntryValue, _ImplicitText, _Unavailable, _reg_of)
from .values import STR_INVALID, STR_OK, STR_TRUNCATED, STRING_CAP

MAGIC = b"CTPLAN02"
_CHAR_P = CType(POINTER, "char *", 8, target=CType(BASE, "char", 1, 6, is_char=True))

@dataclass
class ParamPlan:
    name: str
    ctype: CType
    ops: list[Op] = field(default_factory=list)
    const: bytes | None = None
    note: str | None = None      # "optimized out" / "not captured"
    reason: str | None = None    # why, for "not captured"
    text: bytes | None = None    # a char * to a constant string gcc folded away (implicit pointer)
    deref: bool = False          # a C++ reference: ops[1] holds the referent (status word, bytes)
    # char * fields copied as strings: (name, index of the op holding the
    # pointer among this parameter's ops, offset in that op's bytes)
    follow: list[tuple[str, int, int]] = field(default_factory=list)
    entry_reg: int | None = None   # value = that register at the call (see call_values)
    static: bool = False         # const is an address in the module's file

    @property
    def is_string(self) -> bool:
        return len(self.ops) == 1 and bool(self.ops[0].kind & OP_STRING)


@dataclass
class FunctionPlan:
    origin: int          # DIE offset of the function (shared by its inlined copies)
    ret_vaddr: int       # the key: where the entry hook call returns to
    cfa_base: int
    cfa_off: int
    params: list[ParamPlan]

    @property
    def ops(self) -> list[Op]:
        """Runtime ops in payload order. An OP_FOLLOW's `base` is the index of
        the op (in this list) whose bytes hold the pointer, `off` the
        pointer's offset in them."""
        out: list[Op] = []
        for p in self.params:
            first = len(out)
            out.extend(Op(o.kind, o.base + first, o.size, o.off) if o.kind == OP_DEREF else o for o in p.ops)
            for _, k, off in p.follow:
                out.append(Op(OP_FOLLOW | OP_STRING, first + k, 8, off))
        return out


class _Planner:
    def __init__(self, elf: ELFFile):
        self.elf = elf
        self.dwarf = elf.get_dwarf_info()
        self.locs = LocationReader(self.dwarf)
        self.expr = self.locs.expr
        self.types = TypeReader()
        self.call_values: dict[tuple[int, int], int | bytes] = {}   # (return pc, DWARF reg) -> constant
        self.static_values: set[tuple[int, int]] = set()   # those that are addresses in the file
        self._cfi = self._index_cfi()
        self.code = Code(elf)

    def _index_cfi(self):
        entries = []
        try:
            if self.dwarf.has_EH_CFI():
                entries = self.dwarf.EH_CFI_entries()
            elif self.dwarf.has_CFI():
                entries = self.dwarf.CFI_entries()
        except (DWARFError, KeyError, ValueError):
            entries = []
        fdes = sorted(((e.header.initial_location, e.header.address_range, e) for e in entries
                       if hasattr(e, "header") and hasattr(e.header, "initial_location")),
                      key=lambda x: x[0])
        return fdes, [f[0] for f in fdes]

    def cfa_at(self, pc: int) -> tuple[int, int] | None:
        fdes, starts = self._cfi
        i = bisect.bisect_right(starts, pc) - 1
        if i < 0 or pc >= fdes[i][0] + fdes[i][1]:
            return None
        rule = None
        for row in fdes[i][2].get_decoded().table:
            if row["pc"] > pc:
                break
            rule = row["cfa"]
        if rule is None or rule.expr is not None:
            return None
        if rule.reg == 7:
            return BASE_RSP, rule.offset
        if rule.reg in SAVED:
            return SAVED[rule.reg], rule.offset
        return None

    def plans(self, die, cu) -> list[FunctionPlan]:
        """The plan of each entry hook call in a function's code: its own,
        and those gcc kept for each copy of another function inlined into
        it. A hook call belongs to the innermost copy whose code holds it."""
        nodes = []   # (depth, DIE, its code's ranges)
        stack = [(0, die)]
        while stack:
            depth, node = stack.pop()
            if node is die or (node.tag == "DW_TAG_inlined_subroutine"
                               and "DW_AT_abstract_origin" in node.attributes):
                nodes.append((depth, node, ranges.spans(self.dwarf, node, cu)))
            if node.tag in ("DW_TAG_call_site", "DW_TAG_GNU_call_site"):
                self._call_site(node)
            if node.has_children:
                stack.extend((depth + 1, c) for c in node.iter_children())
        owner: dict[int, tuple] = {}
        for call, ret in (c for lo, hi in nodes[0][2] for c in self.code.entry_hook_calls(lo, hi)):
            inner = max((n for n in nodes if any(lo <= call < hi for lo, hi in n[2])), key=lambda n: n[0],
                        default=None)
            if inner is not None:
                owner[ret] = inner[1]
        frame_base = self._frame_base(die)
        out = []
        for ret, node in sorted(owner.items()):
            origin = node if node is die else node.get_DIE_from_attribute("DW_AT_abstract_origin")
            out.append(self.function(node, cu, origin, frame_base, ret))
        return out

    def _call_site(self, die) -> None:
        try:
            self._call_site_values(die)
        except Exception:   # noqa: BLE001 - a call site we cannot read gives no constants
            pass

    def _call_site_values(self, die) -> None:
        a = die.attributes
        ret = a.get("DW_AT_call_return_pc") or (a.get("DW_AT_low_pc") if die.tag == "DW_TAG_GNU_call_site" else None)
        if ret is None:
            return
        for p in die.iter_children():
            loc = p.attributes.get("DW_AT_location")
            val = p.attributes.get("DW_AT_call_value") or p.attributes.get("DW_AT_GNU_call_site_value")
            if loc is None or val is None or loc.form != "DW_FORM_exprloc":
                continue
            where = self.expr.parse_expr(loc.value)
            what = self.expr.parse_expr(val.value)
            reg = _reg_of(where[0].op_name, where[0].args) if len(where) == 1 else None
            if reg is None or len(what) != 1:
                continue
            op = what[0]
            key = (ret.value, reg)
            if op.op_name.startswith("DW_OP_lit"):
                self.call_values[key] = int(op.op_name[len("DW_OP_lit"):])
            elif op.op_name.startswith("DW_OP_const") and op.args:
                self.call_values[key] = op.args[0]
            elif op.op_name == "DW_OP_addr" and op.args:
                self.call_values[key] = op.args[0]
                self.static_values.add(key)
            elif op.op_name == "DW_OP_implicit_value" and op.args:
                self.call_values[key] = bytes(op.args[-1])   # a float literal

    def _frame_base(self, die):
        fb = die.attributes.get("DW_AT_frame_base")
        if fb is not None and fb.form == "DW_FORM_exprloc":
            ops = self.expr.parse_expr(fb.value)
            if len(ops) == 1 and ops[0].op_name == "DW_OP_call_frame_cfa":
                return BASE_CFA, 0
            if len(ops) == 1 and ops[0].op_name.startswith("DW_OP_breg"):
                r = int(ops[0].op_name[len("DW_OP_breg"):])
                if r == 7 or r in SAVED:
                    return BASE_RSP if r == 7 else SAVED[r], ops[0].args[0]
        return None

    def _locate(self, p: ParamPlan, die, cu, pc: int, frame_base, entry: int | None) -> None:
        """Fill in how to read parameter `p` at the hook's return address;
        whatever the DWARF says, at worst a note on this parameter."""
        try:
            p.ops, p.const, p.static = self.locs.ops(self.locs.location(die, cu, pc, frame_base), p.ctype,
                                                     frame_base)
            if p.ops:
                _shape(p)
        except _ImplicitText as e:
            p.ops, p.text = [], e.text
        except _EntryValue as e:
            p.entry_reg = e.reg
            p.ops = [Op(OP_SITE, 0, 8, 0)]
        except _Unavailable as e:
            p.note, p.reason = e.note, e.reason
            # No location at the hook, but one at the entry: the value the
            # caller passed, when its call site says (as GDB's name@entry).
            reg = self.locs.entry_register(die, cu, entry) if entry is not None and e.note == "optimized out" \
                else None
            if reg is not None:
                p.note, p.entry_reg, p.ops = None, reg, [Op(OP_SITE, 0, 8, 0)]
        except Exception as e:   # noqa: BLE001 - DWARF we do not know must not stop the program
            p.ops, p.const = [], None
            p.note, p.reason = "not captured", f"DWARF location not understood ({type(e).__name__})"

    def function(self, die, cu, origin, frame_base, ret: int) -> FunctionPlan:
        cfa = self.cfa_at(ret)
        # Where a call enters (entry values make sense there only).
        at = ranges.entry(self.dwarf, die, cu) if die.tag == "DW_TAG_subprogram" else None
        entry = at[0] if at else None
        params = []
        # The declaration order comes from the abstract function; the
        # locations from this concrete or inlined copy.
        if origin is die and "DW_AT_abstract_origin" in die.attributes:
            origin = die.get_DIE_from_attribute("DW_AT_abstract_origin")
        concrete = {}
        for child in die.iter_children():
            if child.tag == "DW_TAG_formal_parameter":
                ref = (child.get_DIE_from_attribute("DW_AT_abstract_origin").offset
                       if "DW_AT_abstract_origin" in child.attributes else child.offset)
                concrete[ref] = child
        for decl in origin.iter_children():
            if decl.tag != "DW_TAG_formal_parameter":
                continue
            name = decl.attributes.get("DW_AT_name")
            name = name.value.decode(errors="replace") if name else f"arg{len(params)}"
            p = ParamPlan(name, self.types.of(decl))
            child = concrete.get(decl.offset)
            if cfa is None:
                p.note, p.reason = "not captured", "no call frame information at the entry hook"
            elif child is None:
                p.note = "optimized out"
            else:
                self._locate(p, child, cu, ret, frame_base, entry)
            params.append(p)
        base, off = cfa if cfa else (BASE_RSP, 0)
        return FunctionPlan(origin.offset, ret, base, off, params)


@dataclass
class CapturePlan:
    path: str
    sites: dict[int, FunctionPlan]      # by ret_vaddr
    defined: set[int]                   # entry addresses of functions with DWARF
    call_values: dict[tuple[int, int], int] = field(default_factory=dict)
    failed: dict[int, str] = field(default_factory=dict)   # entry -> why it has no plan
    static_values: set[tuple[int, int]] = field(default_factory=set)   # call_values that are addresses

    def string_at(self, vaddr: int) -> tuple[int, bytes]:
        """(STR_* status, bytes) of the C string at `vaddr` in the file (a
        string literal a constant `char *` points to)."""
        return _file_string(self.path, vaddr)

    @property
    def has_dwarf(self) -> bool:
        return bool(self.defined)

    def ordered(self) -> list[FunctionPlan]:
        """Plans in file order: the runtime records the index of the one used."""
        return sorted(self.sites.values(), key=lambda f: f.ret_vaddr)


@dataclass
class ProgramPlan:
    """The plans of a program's modules: [0] the executable, then the
    instrumented shared libraries it loads at start-up. A function's index
    (what the runtime records) counts through the modules in this order."""
    modules: list[CapturePlan]

    @property
    def paths(self) -> list[str]:
        return [m.path for m in self.modules]

    def ordered(self) -> list[tuple[int, FunctionPlan]]:
        return [(i, f) for i, m in enumerate(self.modules) for f in m.ordered()]

    def serialize(self) -> bytes:
        funcs = self.ordered()
        out_f, out_o = [], []
        for module, f in funcs:
            ops = f.ops
            payload = sum(op.size + (4 + STRING_CAP if op.kind & OP_STRING else 0) for op in ops)
            out_f.append(struct.pack("<QQiBBHII", f.origin, f.ret_vaddr, f.cfa_off, f.cfa_base, module,
                                     len(ops), len(out_o), (payload + 7) & ~7))
            out_o.extend(struct.pack("<BBHi", op.kind, op.base, op.size, op.off) for op in ops)
        # The module paths come last: the runtime checks [0] against its own
        # executable (an image exec'd under `calltrace run` inherits
        # CALLTRACE_PLAN) and finds the libraries' load addresses by file.
        paths = b"".join(struct.pack("<I", len(p)) + p for p in map(os.fsencode, self.paths))
        head = MAGIC + struct.pack("<IIII", 2, len(out_f), len(out_o), len(self.modules))
        return head + b"".join(out_f) + b"".join(out_o) + paths


def _shape(p: ParamPlan) -> None:
    """Copy what the value's bytes point to where it is part of the value:
    a `char *`'s string, a C++ reference's referent, std::string's text,
    a struct's `char *` fields."""
    t = p.ctype
    if t.is_string and len(p.ops) == 1 and p.ops[0].size == 8:
        p.ops = [Op(p.ops[0].kind | OP_STRING, p.ops[0].base, 8, p.ops[0].off)]
        return
    if t.kind == POINTER and t.ref and t.target is not None and len(p.ops) == 1 and p.ops[0].size == 8 \
            and t.target.kind in (BASE, ENUM, POINTER, STRUCT, UNION) and t.target.size:
        target = t.target
        p.ops = [p.ops[0], Op(OP_DEREF, 0, 8 + min(target.size, MEM_CAP), 0)]
        p.deref = True
        whole = [Op(OP_MEM, 0, min(target.size, MEM_CAP))]
        p.follow = [(n, 1, off + 8) for n, _, off in _string_fields(target, whole)]
        return
    if t.kind == STRUCT:
        p.follow = _string_fields(t, p.ops)


def _string_fields(t: CType, ops: list[Op]) -> list[tuple[str, int, int]]:
    """Direct `char *` fields of a struct copied whole (by one op, or in
    pieces at -O2): the runtime follows them like a `char *` parameter (one
    level, as GDB shows them)."""
    if sum(op.size for op in ops) < t.size:
        return []
    out, starts, at = [], [], 0
    for op in ops:
        starts.append(at)
        at += op.size
    # std::string: its text, through the pointer at offset 0.
    fields = [("_M_p", 0, _CHAR_P)] if t.is_std_string else t.fields
    for name, off, ft in fields:
        k = bisect.bisect_right(starts, off) - 1
        if ft.is_string and k >= 0 and off + 8 <= starts[k] + ops[k].size:
            out.append((name, k, off - starts[k]))
    return out[:8]


@lru_cache(maxsize=1024)
def _file_string(path: str, vaddr: int) -> tuple[int, bytes]:
    try:
        with open(path, "rb") as f:
            for seg in ELFFile(f).iter_segments("PT_LOAD"):
                off = vaddr - seg["p_vaddr"]
                if 0 <= off < seg["p_filesz"]:
                    f.seek(seg["p_offset"] + off)
                    raw = f.read(min(STRING_CAP + 1, seg["p_filesz"] - off))
                    nul = raw.find(b"\0")
                    if nul >= 0:
                        return STR_OK, raw[:nul]
                    return (STR_TRUNCATED, raw[:STRING_CAP]) if len(raw) > STRING_CAP else (STR_INVALID, b"")
    except (OSError, ELFError, ValueError):
        pass
    return STR_INVALID, b""


@lru_cache(maxsize=16)
def capture_plan(path: str) -> CapturePlan:
    """The plan for every entry hook call of a function with DWARF in `path`."""
    sites: dict[int, FunctionPlan] = {}
    defined: set[int] = set()
    failed: dict[int, str] = {}
    try:
        with open(path, "rb") as f:
            elf = ELFFile(f)
            if not elf.has_dwarf_info() or elf.get_section_by_name(".debug_info") is None:
                return CapturePlan(path, {}, set())
            planner = _Planner(elf)
            for cu in planner.dwarf.iter_CUs():
                for die in ranges.definitions(cu):
                    try:
                        at = ranges.entry(planner.dwarf, die, cu)
                    except Exception:   # noqa: BLE001 - damaged range lists: no code known
                        continue
                    if at is None:
                        continue
                    defined.add(at[0])
                    try:
                        plans = planner.plans(die, cu)
                    except Exception as e:   # noqa: BLE001 - DWARF we do not know must not stop the program
                        failed[at[0]] = f"DWARF not understood ({type(e).__name__})"
                        plans = []
                    for plan in plans:
                        sites[plan.ret_vaddr] = plan
    except (OSError, ELFError, ValueError):
        return CapturePlan(path, {}, set())
    return CapturePlan(path, sites, defined, planner.call_values, failed, planner.static_values)


def is_aggregate(t: CType) -> bool:
    return t.kind in (STRUCT, UNION, ARRAY)


def program_plan(program: str, libraries: list[str] | None = None) -> ProgramPlan:
    """The plan for `program` (a real path) and, unless `libraries` names
    them, the instrumented shared libraries it loads."""
    if libraries is None:
        from .libraries import instrumented_libraries
        libraries = instrumented_libraries(program)
    # A library without DWARF stays listed: its calls then say why they have
    # no arguments.
    mods = [capture_plan(program)] + [capture_plan(lib) for lib in libraries if lib != program]
    return ProgramPlan(mods[:255])
