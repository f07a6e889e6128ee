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
    ref: bool = False             # a C++ reference (kind POINTER)

    @property
    def is_string(self) -> bool:
        """char * and friends: captured as the string they point to."""
        t = self.target
        return self.kind == POINTER and t is not None and t.kind == BASE and t.is_char and t.size == 1 \
            and not self.ref

    @property
    def is_std_string(self) -> bool:
        """libstdc++'s std::string (the C++11 ABI): a pointer to the text,
        the size, then the small-string buffer; 32 bytes."""
        return self.kind == STRUCT and self.size == 32 and self.cpp_name.startswith(
            "std::__cxx11::basic_string<char,")

    cpp_name: str = ""            # a C++ struct/class's qualified name, without typedefs


def _attr(die, name, default=None):
    a = die.attributes.get(name)
    return default if a is None else a.value


def _name(die) -> str | None:
    n = _attr(die, "DW_AT_name")
    return n.decode(errors="replace") if isinstance(n, bytes) else n


# DW_LANG_* of C++ units: C_plus_plus, _03, _11, _14, _17, _20.
CPP_LANGS = {0x4, 0x19, 0x1A, 0x21, 0x2A, 0x2B}


def _scope(die) -> str:
    """"ns::Class::" for a DIE inside namespaces and classes (C++)."""
    parts = []
    parent = die.get_parent()
    while parent is not None and parent.tag in ("DW_TAG_namespace", "DW_TAG_structure_type",
                                                "DW_TAG_class_type", "DW_TAG_union_type"):
        parts.append(_name(parent) or "(anonymous namespace)")
        parent = parent.get_parent()
    return "".join(p + "::" for p in reversed(parts))


class TypeReader:
    """Resolves DW_AT_type references, memoized per DIE offset. Names are
    spelled as GDB spells them: C's `struct point`, C++'s `ns::Point`."""

    def __init__(self) -> None:
        self._memo: dict[int, CType] = {}
        self._cpp: dict[int, bool] = {}   # per unit offset

    def _is_cpp(self, die) -> bool:
        cu = die.cu
        hit = self._cpp.get(cu.cu_offset)
        if hit is None:
            lang = cu.get_top_DIE().attributes.get("DW_AT_language")
            hit = self._cpp[cu.cu_offset] = lang is not None and lang.value in CPP_LANGS
        return hit

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
                copy.name = (_scope(die) if self._is_cpp(die) and name else "") + (name or inner.name)
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
            return CType(POINTER, spelled, size or 8, target=target, ref=tag != "DW_TAG_pointer_type")
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
            if self._is_cpp(die):
                full = _scope(die) + (name or "<anonymous>")
                return CType(UNION if kw == "union" else STRUCT, full, size, fields=fields, cpp_name=full)
            return CType(UNION if kw == "union" else STRUCT, f"{kw} {name}" if name else f"{kw} <anonymous>",
                         size, fields=fields)
        if tag == "DW_TAG_enumeration_type":
            under = self.of(die) if "DW_AT_type" in die.attributes else None
            signed = under is None or under.encoding in (ATE_SIGNED, ATE_SIGNED_CHAR)
            enums = {}
            for child in die.iter_children():
                if child.tag == "DW_TAG_enumerator":
                    enums[_attr(child, "DW_AT_const_value", 0)] = _name(child) or "?"
            spelled = (_scope(die) + (name or "<anonymous>") if self._is_cpp(die)
                       else f"enum {name}" if name else "enum <anonymous>")
            return CType(ENUM, spelled, size or 4, enumerators=enums, signed=signed)
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
