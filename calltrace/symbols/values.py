"""Bytes captured at a call -> typed JSON values (docs/FORMAT.md, VALUE)."""
from __future__ import annotations

import math
import struct
from typing import Callable

from .ctypes_dwarf import (ARRAY, ATE_BOOLEAN, ATE_FLOAT, ATE_SIGNED, ATE_SIGNED_CHAR, BASE,
                           ENUM, FUNC, POINTER, STRUCT, UNION, CType)

STRING_CAP = 256       # bytes of a string copied at call time (runtime/capture.c, gdb_scripts)
Symbolize = Callable[[int], "str | None"]


def char_text(b: int) -> str:
    """A char as FORMAT.md wants it: itself when printable or \n \t \r,
    else a literal backslash-x escape (the GDB backend uses the same rule)."""
    if 32 <= b < 127 or b in (9, 10, 13):
        return chr(b)
    return f"\\x{b:02x}"


def text_of(raw: bytes) -> str:
    """A C string's bytes: UTF-8 where valid; other bytes and control
    characters as backslash-x escapes."""
    text = raw.decode("utf-8", "backslashreplace")
    if any(ord(ch) < 32 and ch not in "\n\t\r" for ch in text):
        text = "".join(ch if ord(ch) >= 32 or ch in "\n\t\r" else f"\\x{ord(ch):02x}" for ch in text)
    return text


def _float(x: float):
    if math.isnan(x):
        return "nan"
    if math.isinf(x):
        return "inf" if x > 0 else "-inf"
    return x


def _long_double(raw: bytes) -> float:
    """x87 80-bit extended precision, as stored in the low 10 of 16 bytes."""
    mant = int.from_bytes(raw[:8], "little")
    se = int.from_bytes(raw[8:10], "little")
    sign = -1.0 if se & 0x8000 else 1.0
    exp = se & 0x7FFF
    if exp == 0x7FFF:
        return float("nan") if mant & ((1 << 63) - 1) else sign * float("inf")
    if exp == 0 and mant == 0:
        return sign * 0.0
    try:
        return sign * math.ldexp(mant, exp - 16383 - 63)
    except OverflowError:
        return sign * float("inf")


def decode(t: CType, raw: bytes, symbolize: Symbolize | None = None):
    """The JSON value of `raw` (exactly t.size bytes, or fewer when the
    capture was truncated) as type `t`."""
    if t.kind == BASE:
        if t.encoding == ATE_FLOAT:
            if t.size == 4:
                return _float(struct.unpack("<f", raw[:4])[0])
            if t.size == 8:
                return _float(struct.unpack("<d", raw[:8])[0])
            return _float(_long_double(raw))
        if t.encoding == ATE_BOOLEAN:
            return any(raw[:t.size])
        signed = t.encoding in (ATE_SIGNED, ATE_SIGNED_CHAR)
        n = int.from_bytes(raw[:t.size], "little", signed=signed)
        if t.is_char:
            return char_text(n & 0xFF)
        return n
    if t.kind == ENUM:
        n = int.from_bytes(raw[:t.size], "little", signed=t.signed)
        return t.enumerators.get(n, n)
    if t.kind == POINTER:
        addr = int.from_bytes(raw[:8], "little")
        if t.target is not None and t.target.kind == FUNC and addr and symbolize:
            name = symbolize(addr)
            return f"0x{addr:x} <{name}>" if name else f"0x{addr:x}"
        return f"0x{addr:x}"
    if t.kind in (STRUCT, UNION):
        return {name: decode(ft, raw[off:off + max(ft.size, 1)], symbolize)
                for name, off, ft in t.fields if off < len(raw)}
    if t.kind == ARRAY and t.target is not None and t.target.size:
        if t.target.kind == BASE and t.target.is_char:
            return text_of(raw[:t.count].split(b"\0", 1)[0])
        step = t.target.size
        return [decode(t.target, raw[i:i + step], symbolize) for i in range(0, min(len(raw), t.size), step)]
    return "0x" + raw[:t.size].hex()


STR_OK, STR_NULL, STR_INVALID, STR_TRUNCATED = 0, 1, 2, 3


def decode_string(t: CType, pointer: int, status: int, text: bytes) -> dict:
    """A `char *` argument as captured: the value dict without the name."""
    if status == STR_NULL or pointer == 0:
        return {"type": t.name, "value": None}
    if status == STR_INVALID:
        return {"type": t.name, "value": f"0x{pointer:x}", "note": "invalid pointer"}
    out = {"type": t.name, "value": text_of(text)}
    if status == STR_TRUNCATED:
        out["note"] = "truncated"
    return out
