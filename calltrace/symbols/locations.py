"""Where a parameter is at one instruction, as copy operations for the
runtime (DWARF location expressions and lists, evaluated for what a hook
running at that instruction can still read)."""
from __future__ import annotations

from typing import NamedTuple

from elftools.dwarf.dwarf_expr import DWARFExprParser
from elftools.dwarf.locationlists import BaseAddressEntry, LocationExpr, LocationParser

from .ctypes_dwarf import CType

OP_REG, OP_MEM, OP_FOLLOW, OP_SITE, OP_DEREF, OP_STRING = 1, 2, 3, 4, 5, 0x80
BASE_RSP, BASE_CFA = 0xFD, 0xFE
SAVED = {3: 0, 6: 1, 12: 2, 13: 3, 14: 4, 15: 5}   # DWARF reg -> slot saved by capture.c
MEM_CAP = 256                                      # bytes copied of one by-value argument


class Op:
    __slots__ = ("kind", "base", "size", "off")

    def __init__(self, kind: int, base: int, size: int, off: int = 0):
        self.kind, self.base, self.size, self.off = kind, base, size, off

    def __eq__(self, other) -> bool:
        return isinstance(other, Op) and (self.kind, self.base, self.size, self.off) == (
            other.kind, other.base, other.size, other.off)

    def __repr__(self) -> str:
        return f"Op(kind={self.kind}, base={self.base}, size={self.size}, off={self.off})"


class Location(NamedTuple):
    """How to get a parameter's value: copy `ops`, or it is the constant
    `const`; `static` says the constant is an address in the module's file
    (relocated by its load bias)."""
    ops: list
    const: bytes | None = None
    static: bool = False


class _Unavailable(Exception):
    """No value for the runtime to copy: "optimized out" (DWARF has none
    here) or "not captured" (DWARF has one calltrace cannot read at the
    entry hook), with the reason."""
    def __init__(self, note: str, reason: str | None = None):
        self.note, self.reason = note, reason


def _not_captured(reason: str) -> _Unavailable:
    return _Unavailable("not captured", reason)


class _ImplicitText(Exception):
    """A `char *` that points to a constant the compiler folded away
    (DW_OP_implicit_pointer to a DIE with DW_AT_const_value): its text."""
    def __init__(self, text: bytes):
        self.text = text


class _EntryValue(Exception):
    """The value is the one register `reg` had at the call: only the caller's
    call site knows it (DW_TAG_call_site_parameter), so record the call site."""
    def __init__(self, reg: int):
        self.reg = reg


def _reg_of(name: str, args) -> int | None:
    if name.startswith("DW_OP_reg") and name != "DW_OP_regx":
        return int(name[len("DW_OP_reg"):])
    if name == "DW_OP_regx":
        return args[0]
    return None



class LocationReader:
    def __init__(self, dwarf):
        self.dwarf = dwarf
        self.loc = LocationParser(dwarf.location_lists())
        self.expr = DWARFExprParser(dwarf.structs)

    def location(self, die, cu, pc: int, frame_base):
        attr = die.attributes.get("DW_AT_location")
        if attr is None:
            if "DW_AT_const_value" in die.attributes:
                return die.attributes["DW_AT_const_value"].value
            raise _Unavailable("optimized out")
        loc = self.loc.parse_from_attribute(attr, cu["version"], die)
        if isinstance(loc, LocationExpr):
            return loc.loc_expr
        top = cu.get_top_DIE()
        base = top.attributes["DW_AT_low_pc"].value if "DW_AT_low_pc" in top.attributes else 0
        for entry in loc:
            if isinstance(entry, BaseAddressEntry):
                base = entry.base_address
                continue
            lo, hi = ((entry.begin_offset, entry.end_offset) if entry.is_absolute
                      else (base + entry.begin_offset, base + entry.end_offset))
            if lo <= pc < hi:
                return entry.loc_expr
        raise _Unavailable("optimized out")

    def entry_register(self, die, cu, entry: int) -> int | None:
        """The DWARF register a parameter is in at its function's entry, by
        its location list, or None."""
        attr = die.attributes.get("DW_AT_location")
        if attr is None or attr.form == "DW_FORM_exprloc":
            return None
        top = cu.get_top_DIE()
        base = top.attributes["DW_AT_low_pc"].value if "DW_AT_low_pc" in top.attributes else 0
        for e in self.loc.parse_from_attribute(attr, cu["version"], die):
            if isinstance(e, BaseAddressEntry):
                base = e.base_address
                continue
            lo = e.begin_offset if e.is_absolute else base + e.begin_offset
            if lo == entry:
                ops = self.expr.parse_expr(e.loc_expr)
                return _reg_of(ops[0].op_name, ops[0].args) if len(ops) == 1 else None
        return None

    def _implicit_bytes(self, ref: int, name: str) -> bytes:
        """The bytes an implicit pointer points to: the target DIE's
        constant, or its DW_OP_implicit_value (gcc's DW_TAG_dwarf_procedure
        for a string literal)."""
        target = self.dwarf.get_DIE_from_refaddr(ref)
        blob = target.attributes.get("DW_AT_const_value")
        if blob is not None and isinstance(blob.value, (list, bytes)):
            return bytes(blob.value)
        loc = target.attributes.get("DW_AT_location")
        if loc is not None and loc.form == "DW_FORM_exprloc":
            ops = self.expr.parse_expr(loc.value)
            if len(ops) == 1 and ops[0].op_name == "DW_OP_implicit_value" and ops[0].args:
                return bytes(ops[0].args[-1])
        raise _not_captured(f"{name} to a value that is not a constant")

    def ops(self, expr, ctype: CType, frame_base) -> Location:
        """The Location of a value described by `expr` (`DW_OP_bregN k;
        DW_OP_stack_value` is the register plus k, as gcc says of a value it
        keeps adjusted: an OP_REG with `off` k)."""
        if isinstance(expr, int):
            return Location([], expr.to_bytes(8, "little", signed=expr < 0)[:max(ctype.size, 1)])
        if isinstance(expr, bytes):
            return Location([], expr)
        parsed = self.expr.parse_expr(expr)
        ops: list[Op] = []
        pending: tuple | None = None
        stack_const: int | None = None
        static = False
        size_left = ctype.size or 8
        for op in parsed:
            name, args = op.op_name, op.args
            reg = _reg_of(name, args)
            if name in ("DW_OP_entry_value", "DW_OP_GNU_entry_value"):
                inner = args[-1] if args and isinstance(args[-1], list) else []
                if (len(parsed) == 2 and parsed[1].op_name == "DW_OP_stack_value" and len(inner) == 1
                        and _reg_of(inner[0].op_name, inner[0].args) is not None):
                    raise _EntryValue(_reg_of(inner[0].op_name, inner[0].args))
                raise _not_captured("computed from values at the call (DW_OP_entry_value)")
            if reg is not None:
                if reg not in SAVED:
                    raise _not_captured(f"kept in a register the entry hook call overwrites (DWARF reg {reg})")
                pending = (OP_REG, SAVED[reg], 0)
            elif name == "DW_OP_fbreg":
                if frame_base is None:
                    raise _not_captured("relative to a frame base calltrace does not follow")
                pending = (OP_MEM, frame_base[0], frame_base[1] + args[0])
            elif name.startswith("DW_OP_breg") and name != "DW_OP_bregx":
                r = int(name[len("DW_OP_breg"):])
                base = BASE_RSP if r == 7 else SAVED.get(r)
                if base is None:
                    raise _not_captured(f"at an address held in a register the entry hook call overwrites "
                                        f"(DWARF reg {r})")
                pending = (OP_MEM, base, args[0])
            elif name == "DW_OP_call_frame_cfa":
                pending = (OP_MEM, BASE_CFA, 0)
            elif name == "DW_OP_addr" and pending is None and stack_const is None:
                stack_const, static = args[0], True
            elif name.startswith("DW_OP_lit"):
                stack_const = int(name[len("DW_OP_lit"):])
            elif name in ("DW_OP_const1u", "DW_OP_const2u", "DW_OP_const4u", "DW_OP_const8u",
                          "DW_OP_const1s", "DW_OP_const2s", "DW_OP_const4s", "DW_OP_const8s",
                          "DW_OP_constu", "DW_OP_consts"):
                stack_const = args[0]
            elif name == "DW_OP_plus_uconst" and (pending is not None or stack_const is not None):
                if stack_const is not None:
                    stack_const += args[0]
                else:
                    pending = (pending[0], pending[1], pending[2] + args[0])
            elif name == "DW_OP_stack_value":
                if stack_const is None and pending is not None and pending[0] == OP_MEM and pending[1] in \
                        SAVED.values() and not ops:
                    return Location([Op(OP_REG, pending[1], min(max(ctype.size, 1), 8), pending[2])])
                if stack_const is None:
                    raise _not_captured("computed by a DWARF expression")
                size = max(ctype.size, 1)
                return Location([], (stack_const % (1 << 64)).to_bytes(8, "little")[:size], static)
            elif name == "DW_OP_implicit_value":
                # pyelftools gives the block alone (the length is implied).
                blob = bytes(args[-1]) if args and isinstance(args[-1], (list, bytes)) else None
                if blob is None:
                    raise _not_captured("unreadable DW_OP_implicit_value")
                return Location([], blob)
            elif name in ("DW_OP_implicit_pointer", "DW_OP_GNU_implicit_pointer") and ctype.is_string:
                raise _ImplicitText(self._implicit_bytes(args[0], name)[args[1]:].split(b"\0", 1)[0])
            elif name == "DW_OP_piece":
                if pending is None:
                    raise _Unavailable("optimized out")   # an empty piece: part optimized out
                ops.append(Op(pending[0], pending[1], args[0], pending[2]))
                size_left -= args[0]
                pending = None
            else:
                raise _not_captured(f"{name} is not supported")
        if pending is not None:
            size = min(max(size_left, 1), MEM_CAP)
            if pending[0] == OP_REG:
                size = min(size, 8)
            ops.append(Op(pending[0], pending[1], size, pending[2]))
        if static:
            raise _not_captured("in memory at a static address")
        if not ops:
            raise _not_captured("an empty DWARF location")
        return Location(ops)
