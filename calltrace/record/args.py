"""Captured argument bytes -> the `args` list of each call (FORMAT.md VALUE).

The payload layout follows the plan's ops (symbols/plan.py): each op's bytes
in order; a string op adds a status byte, a length byte and the text."""
from __future__ import annotations

import bisect
import json

from ..symbols.plan import FunctionPlan, ProgramPlan
from ..symbols.ctypes_dwarf import POINTER
from ..symbols.values import STR_INVALID, STR_OK, STR_TRUNCATED, STRING_CAP, decode, decode_string

NO_DWARF = b',"args_note":"no DWARF parameter info for this function (build with -g)"'
NO_MATCH = b',"args_note":"arguments not captured at this call"'
NOT_PLANNED = (b',"args_note":"arguments are captured in the executable and the libraries '
               b'it loads at start-up, not in this module"')


class ArgsDecoder:
    """One per conversion: function index -> plan, results memoized on the
    exact payload bytes (loops repeat arguments often).

    `loaded[i]` is where the plan's module i was loaded (None: not loaded)."""

    def __init__(self, plan: ProgramPlan, loaded: list, addrs: list[int], symbolize):
        self.plan = plan
        self.symbolize = symbolize
        self.sites = plan.ordered()
        spans = sorted((m.lo, m.hi, i, m.bias) for i, m in enumerate(loaded) if m is not None)
        self._spans = spans
        self._los = [s[0] for s in spans]
        self._bias = {i: m.bias for i, m in enumerate(loaded) if m is not None}
        self._notes = [self._note(a) for a in addrs]
        self._memo: dict[tuple[int, bytes], bytes] = {}

    def _module_at(self, addr: int) -> tuple[int, int] | None:
        """(plan module index, load bias) of the module holding `addr`."""
        i = bisect.bisect_right(self._los, addr) - 1
        if i >= 0 and addr < self._spans[i][1]:
            return self._spans[i][2], self._spans[i][3]
        return None

    def _note(self, addr: int) -> bytes:
        at = self._module_at(addr)
        if at is None:
            return NOT_PLANNED if self.plan.modules[0].has_dwarf else NO_DWARF
        module, bias = at
        mod = self.plan.modules[module]
        why = mod.failed.get(addr - bias)
        if why is not None:
            return b',"args_note":' + json.dumps(f"arguments not captured: {why}").encode()
        return NO_MATCH if addr - bias in mod.defined else NO_DWARF

    def notes(self) -> list[bytes | None]:
        """What a call without an ARGS record says instead."""
        return list(self._notes)

    def __call__(self, fidx: int, site: int, payload: bytes) -> bytes:
        key = (site, payload)
        hit = self._memo.get(key)
        if hit is None:
            plan = self.sites[site][1] if site < len(self.sites) else None
            hit = NO_MATCH if plan is None else b',"args":' + json.dumps(
                self.values(plan, payload, self.sites[site][0]), ensure_ascii=False,
                separators=(",", ":")).encode()
            if len(self._memo) < 100_000:
                self._memo[key] = hit
        return hit

    def _call_value(self, site: int, reg: int) -> tuple[int | bytes, int, bool] | None:
        """(constant, module, is an address in the file) the caller passed
        in `reg` (its DWARF call-site parameters), or None."""
        at = self._module_at(site)
        if at is None:
            return None
        module, bias = at
        mod = self.plan.modules[module]
        key = (site - bias, reg)
        const = mod.call_values.get(key)
        return None if const is None else (const, module, key in mod.static_values)

    def _constant(self, p, const: int | bytes, module: int, static: bool) -> dict:
        """The VALUE of parameter `p` known as a constant: a NULL `char *`
        is null, a string literal is read from the module's file, an
        address in the file is relocated."""
        size = max(p.ctype.size, 1)
        data = const[:size] if isinstance(const, bytes) else (const % (1 << 64)).to_bytes(8, "little")[:size]
        n = int.from_bytes(data, "little")
        if static and p.ctype.kind == POINTER:
            if p.ctype.is_string:
                status, text = self.plan.modules[module].string_at(n)
                if status != STR_INVALID:
                    return decode_string(p.ctype, n, status, text)
            n += self._bias.get(module, 0)
            data = n.to_bytes(8, "little")
        if p.ctype.is_string:
            if n == 0:
                return {"type": p.ctype.name, "value": None}
            return {"type": p.ctype.name, "value": None, "note": "not captured",
                    "reason": "a constant pointer calltrace cannot follow after the run"}
        return {"type": p.ctype.name, "value": decode(p.ctype, data, self.symbolize)}

    def _value(self, p, raw: bytes, strings: dict) -> dict:
        """The VALUE of a parameter copied by the runtime: its bytes, the
        referent's for a C++ reference (after a status word), the strings
        its char * fields (or std::string's text) point to."""
        t = p.ctype
        if p.deref:
            if raw[8]:
                return {"type": t.name, "value": f"0x{int.from_bytes(raw[:8], 'little'):x}",
                        "note": "invalid pointer"}
            t, raw = t.target, raw[16:]
        if t.is_std_string and "_M_p" in strings:
            v = decode_string(t, *strings["_M_p"])
            return {**v, "type": p.ctype.name}
        value = decode(t, raw, self.symbolize)
        for name, (pointer, status, text) in strings.items():
            field_type = next(ft for n, _, ft in t.fields if n == name)
            value[name] = decode_string(field_type, pointer, status, text)["value"]
        return {"type": p.ctype.name, "value": value}

    def values(self, plan: FunctionPlan, payload: bytes, module: int = 0) -> list[dict]:
        out, pos = [], 0
        for p in plan.params:
            if p.note:
                v = {"name": p.name, "type": p.ctype.name, "value": None, "note": p.note}
                if p.reason:
                    v["reason"] = p.reason
                out.append(v)
                continue
            if p.text is not None:
                status = STR_TRUNCATED if len(p.text) > STRING_CAP else STR_OK
                out.append({"name": p.name, **decode_string(p.ctype, 1, status, p.text[:STRING_CAP])})
                continue
            if p.const is not None:
                out.append({"name": p.name, **self._constant(p, p.const, module, p.static)})
                continue
            raw = b""
            for op in p.ops:
                raw += payload[pos:pos + op.size]
                pos += op.size
            if p.entry_reg is not None:
                known = self._call_value(int.from_bytes(raw, "little"), p.entry_reg)
                if known is None:
                    out.append({"name": p.name, "type": p.ctype.name, "value": None, "note": "not captured",
                                "reason": "passed in a register the entry hook overwrites; the caller's "
                                          "DWARF gives no constant for it"})
                else:
                    out.append({"name": p.name, **self._constant(p, *known)})
                continue
            if p.is_string:
                status = payload[pos]
                length = int.from_bytes(payload[pos + 2:pos + 4], "little")
                text = payload[pos + 4:pos + 4 + length]
                pos += 4 + length
                v = decode_string(p.ctype, int.from_bytes(raw, "little"), status, text)
                out.append({"name": p.name, **v})
                continue
            strings = {}
            for name, _, _ in p.follow:
                pointer = int.from_bytes(payload[pos:pos + 8], "little")
                status = payload[pos + 8]
                length = int.from_bytes(payload[pos + 10:pos + 12], "little")
                strings[name] = (pointer, status, payload[pos + 12:pos + 12 + length])
                pos += 12 + length
            out.append({"name": p.name, **self._value(p, raw, strings)})
        return out
