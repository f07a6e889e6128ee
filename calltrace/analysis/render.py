"""Text rendering shared by the post-mortem commands: captured values,
tables, and terminal colour (only on a terminal, never in a pipe)."""
from __future__ import annotations

import json
import os
import sys
from typing import Sequence

from ..units import count, fmt_ns

_CHAR_TYPES = {"char", "signed char", "unsigned char", "const char", "wchar_t"}
_BARE = {"nan", "inf", "-inf", "-nan"}
_ESCAPES = {"\n": "\\n", "\t": "\\t", "\r": "\\r", "\0": "\\0", "'": "\\'"}


def _char(c: str) -> str:
    """A char value on one line: control characters escaped."""
    if c in _ESCAPES:
        return _ESCAPES[c]
    if ord(c) < 0x20 or ord(c) == 0x7f:
        return f"\\x{ord(c):02x}"
    return c


def fmt_value(v: dict) -> str:
    """One captured VALUE (docs/FORMAT.md) as C-like text."""
    typ = v.get("type", "") or ""
    val = v.get("value")
    note = v.get("note")
    if note and note != "truncated" and val is None:
        return f"<{note}>"
    text = _fmt(val, typ)
    if note == "truncated":
        text += "..."
    elif note:
        text += f" <{note}>"
    return text


def _fmt(val, typ: str) -> str:
    if val is None:
        return "NULL" if "*" in typ or "[" in typ else "?"
    if isinstance(val, bool):
        return "true" if val else "false"
    if isinstance(val, str):
        base = typ.replace("const ", "").replace("volatile ", "").strip()
        if base in _CHAR_TYPES:
            return "'" + "".join(_char(c) for c in val) + "'"
        if not typ:
            # a struct field: its type is not recorded; quote what is not
            # plainly a pointer or a special float
            return val if val.startswith("0x") or val in _BARE else json.dumps(val, ensure_ascii=False)
        if "char" in base and ("*" in base or "[" in base) and not val.startswith("0x"):
            return json.dumps(val, ensure_ascii=False)
        return val
    if isinstance(val, dict):
        return "{" + ", ".join(f"{k}={_fmt(x, '')}" for k, x in val.items()) + "}"
    if isinstance(val, list):
        return "[" + ", ".join(_fmt(x, "") for x in val) + "]"
    return str(val)


def fmt_call(function: str, extra: dict | None) -> str:
    """``name(a=1, s="x") = 3`` when arguments/return were captured, else ``name``."""
    if not extra:
        return function
    text = function
    args = extra.get("args")
    if args is not None:
        text += "(" + ", ".join(
            (f"{a['name']}=" if a.get("name") else "") + fmt_value(a) for a in args) + ")"
    ret = extra.get("return")
    if ret is not None:
        text += " = " + fmt_value(ret)
    marks = [m for m in ("incomplete", "unwound") if extra.get(m)]
    if marks:
        text += " [" + ", ".join(marks) + "]"
    return text


class Colour:
    """ANSI styles, all empty when colour is off."""

    def __init__(self, on: bool):
        self.on = on
        e = (lambda code: f"\x1b[{code}m") if on else (lambda code: "")
        self.reset, self.bold, self.dim = e(0), e(1), e(2)
        self.red, self.yellow, self.green, self.cyan = e(31), e(33), e(32), e(36)

    def duration(self, ns: int, text: str) -> str:
        if not self.on:
            return text
        if ns >= 1_000_000:
            return self.red + text + self.reset
        if ns >= 10_000:
            return self.yellow + text + self.reset
        return text


def use_colour(choice: str = "auto", stream=None) -> bool:
    if choice == "always":
        return True
    if choice == "never" or os.environ.get("NO_COLOR"):
        return False
    stream = stream or sys.stdout
    return stream.isatty() and os.environ.get("TERM") != "dumb"


def table(header: Sequence[str], rows: list[Sequence[str]], left: int = 1) -> list[str]:
    """Aligned text columns: the last ``left`` columns left-aligned, the others right."""
    widths = [len(h) for h in header]
    for r in rows:
        for i, cell in enumerate(r):
            widths[i] = max(widths[i], len(cell))
    n = len(header)

    def line(cells):
        out = []
        for i, cell in enumerate(cells):
            out.append(cell.ljust(widths[i]) if i >= n - left else cell.rjust(widths[i]))
        return "  ".join(out).rstrip()

    return [line(header)] + [line(r) for r in rows]


def top_lines(functions, limit: int, self_label: str = "self") -> list[str]:
    """The hottest functions by self time, as the run/debug summaries show them."""
    top = [f for f in functions if f.calls][:limit]
    if not top:
        return []
    return [f"  {self_label:>12} {'total':>12} {'calls':>10}  function"] + [
        f"  {fmt_ns(f.self_ns):>12} {fmt_ns(f.total_ns):>12} {count(f.calls):>10}  {f.function}"
        for f in top]
