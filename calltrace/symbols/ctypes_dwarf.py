"""C types from DWARF, reduced to what decoding an argument needs."""
from __future__ import annotations

from dataclasses import dataclass, field

BASE, POINTER, STRUCT, UNION, ENUM, ARRAY, FUNC, VOID, UNKNOWN = (
    "base", "pointer", "struct", "union", "enum", "array", "function", "void", "unknown")

# DW_ATE_* encodings
ATE_BOOLEAN, ATE_FLOAT, ATE_SIGNED, ATE_SIGNED_CHAR, ATE_UNSIGNED, ATE_UNSIGNED_CHAR, ATE_UTF = (
    2, 4, 5, 6, 8, 8, 16)


@dataclass
class CType:
    kind: str
    name: str                     # C spelling, e.g. "const char *", "struct point"
    size: int = 0
    encoding: int = 0             # base types
    target: "CType | None" = None  # pointers, arrays, typedef'd enums
    fields: list[tuple[str, int, "CType"]] = field(default_factory=list)  # struct/union
    enumerators: dict[int, str] = field(default_factory=dict)
    count: int = 0                # arrays
    signed: bool = True           # enums
    is_char: bool = False

    @property
    def is_string(self) -> bool:
        """char * and friends: captured as the string they point to."""
        t = self.target
        return self.kind == POINTER and t is not None and t.kind == BASE and t.is_char and t.size == 1


def _attr(die, name, default=None):
    a = die.attributes.get(name)
    return default if a is None else a.value


def _name(die) -> str | None:
    n = _attr(die, "DW_AT_name")
    return n.decode(errors="replace") if isinstance(n, bytes) else n


class TypeReader:
    """Resolves DW_AT_type references, memoized per DIE offset."""

    def __init__(self) -> None:
        self._memo: dict[int, CType] = {}

    def of(self, die) -> CType:
        if "DW_AT_type" not in die.attributes:
            return CType(VOID, "void")
        return self.read(die.get_DIE_from_attribute("DW_AT_type"))

    def read(self, die) -> CType:
        key = die.offset
        hit = self._memo.get(key)
        if hit is not None:
            return hit
        placeholder = CType(UNKNOWN, "?")
        self._memo[key] = placeholder   # breaks cycles (struct with pointer to itself)
        t = self._read(die)
        placeholder.__dict__.update(t.__dict__)
        return placeholder

    def _read(self, die) -> CType:
        tag = die.tag
        name = _name(die)
        size = _attr(die, "DW_AT_byte_size", 0)
        if tag == "DW_TAG_base_type":
            enc = _attr(die, "DW_AT_encoding", 0)
            is_char = enc in (ATE_SIGNED_CHAR, ATE_UNSIGNED_CHAR) and size == 1 and "char" in (name or "")
            return CType(BASE, name or "?", size, enc, is_char=is_char)
        if tag in ("DW_TAG_typedef", "DW_TAG_const_type", "DW_TAG_volatile_type",
                   "DW_TAG_restrict_type", "DW_TAG_atomic_type"):
            inner = self.of(die)
            copy = CType(**{**inner.__dict__})
            if tag == "DW_TAG_typedef":
                copy.name = name or inner.name
                if copy.is_char and name and "char" not in name:
                    copy.is_char = False   # int8_t and friends are numbers, not characters
            elif tag == "DW_TAG_const_type":
                copy.name = _qualify(inner, "const")
            elif tag == "DW_TAG_volatile_type":
                copy.name = _qualify(inner, "volatile")
            return copy
        if tag in ("DW_TAG_pointer_type", "DW_TAG_reference_type", "DW_TAG_rvalue_reference_type"):
            target = self.of(die)
            mark = {"DW_TAG_pointer_type": "*", "DW_TAG_reference_type": "&"}.get(tag, "&&")
            spelled = (_func_pointer_name(target) if target.kind == FUNC
                       else f"{target.name} {mark}" if not target.name.endswith("*")
                       else f"{target.name}{mark}")
            return CType(POINTER, spelled, size or 8, target=target)
        if tag in ("DW_TAG_structure_type", "DW_TAG_class_type", "DW_TAG_union_type"):
            kw = "union" if tag == "DW_TAG_union_type" else "struct"
            fields = []
            for child in die.iter_children():
                if child.tag != "DW_TAG_member" or "DW_AT_bit_size" in child.attributes:
                    continue
                off = _attr(child, "DW_AT_data_member_location", 0)
                if not isinstance(off, int):
                    continue
                fields.append((_name(child) or "?", off, self.of(child)))
            return CType(UNION if kw == "union" else STRUCT, f"{kw} {name}" if name else f"{kw} <anonymous>",
                         size, fields=fields)
        if tag == "DW_TAG_enumeration_type":
            under = self.of(die) if "DW_AT_type" in die.attributes else None
            signed = under is None or under.encoding in (ATE_SIGNED, ATE_SIGNED_CHAR)
            enums = {}
            for child in die.iter_children():
                if child.tag == "DW_TAG_enumerator":
                    enums[_attr(child, "DW_AT_const_value", 0)] = _name(child) or "?"
            return CType(ENUM, f"enum {name}" if name else "enum <anonymous>", size or 4,
                         enumerators=enums, signed=signed)
        if tag == "DW_TAG_array_type":
            elem = self.of(die)
            count = 0
            for child in die.iter_children():
                if child.tag == "DW_TAG_subrange_type":
                    if "DW_AT_count" in child.attributes:
                        count = _attr(child, "DW_AT_count", 0)
                    elif "DW_AT_upper_bound" in child.attributes:
                        ub = _attr(child, "DW_AT_upper_bound", -1)
                        count = ub + 1 if isinstance(ub, int) else 0
                    break
            return CType(ARRAY, f"{elem.name}[{count}]", elem.size * count, target=elem, count=count)
        if tag == "DW_TAG_subroutine_type":
            ret = self.of(die)
            params = [self.of(c).name for c in die.iter_children() if c.tag == "DW_TAG_formal_parameter"]
            return CType(FUNC, f"{ret.name} ({', '.join(params) or 'void'})", 0, target=ret)
        return CType(UNKNOWN, name or tag.replace("DW_TAG_", ""), size)


def _qualify(inner: CType, q: str) -> str:
    if inner.kind == POINTER:
        return f"{inner.name} {q}"
    return f"{q} {inner.name}"


def _func_pointer_name(fn: CType) -> str:
    ret, _, params = fn.name.partition(" (")
    return f"{ret} (*)({params}"
