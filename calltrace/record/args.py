"""Captured argument bytes -> the `args` list of each call (FORMAT.md VALUE).

The payload layout follows the plan's ops (symbols/plan.py): each op's bytes
in order; a string op adds a status byte, a length byte and the text."""
from __future__ import annotations

import bisect
import json

from ..symbols.plan import FunctionPlan, ProgramPlan
from ..symbols.values import decode, decode_string

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
        return NO_MATCH if addr - bias in self.plan.modules[module].defined else NO_DWARF

    def notes(self) -> list[bytes | None]:
        """What a call without an ARGS record says instead."""
        return list(self._notes)

    def __call__(self, fidx: int, site: int, payload: bytes) -> bytes:
        key = (site, payload)
        hit = self._memo.get(key)
        if hit is None:
            plan = self.sites[site][1] if site < len(self.sites) else None
            hit = NO_MATCH if plan is None else b',"args":' + json.dumps(
                self.values(plan, payload), ensure_ascii=False, separators=(",", ":")).encode()
            if len(self._memo) < 100_000:
                self._memo[key] = hit
        return hit

    def _call_value(self, site: int, reg: int) -> int | None:
        """A constant the caller passed (its DWARF call-site parameters)."""
        at = self._module_at(site)
        if at is None:
            return None
        module, bias = at
        return self.plan.modules[module].call_values.get((site - bias, reg))

    def values(self, plan: FunctionPlan, payload: bytes) -> list[dict]:
        out, pos = [], 0
        for p in plan.params:
            if p.note:
                out.append({"name": p.name, "type": p.ctype.name, "value": None, "note": p.note})
                continue
            if p.const is not None:
                out.append({"name": p.name, "type": p.ctype.name,
                            "value": decode(p.ctype, p.const, self.symbolize)})
                continue
            raw = b""
            for op in p.ops:
                raw += payload[pos:pos + op.size]
                pos += op.size
            if p.entry_reg is not None:
                const = self._call_value(int.from_bytes(raw, "little"), p.entry_reg)
                if const is None:
                    out.append({"name": p.name, "type": p.ctype.name, "value": None,
                                "note": "optimized out"})
                else:
                    size = max(p.ctype.size, 1)
                    data = (const & ((1 << (8 * size)) - 1)).to_bytes(size, "little")
                    out.append({"name": p.name, "type": p.ctype.name,
                                "value": decode(p.ctype, data, self.symbolize)})
                continue
            if p.is_string:
                status = payload[pos]
                length = int.from_bytes(payload[pos + 2:pos + 4], "little")
                text = payload[pos + 4:pos + 4 + length]
                pos += 4 + length
                v = decode_string(p.ctype, int.from_bytes(raw, "little"), status, text)
                out.append({"name": p.name, **v})
                continue
            value = decode(p.ctype, raw, self.symbolize)
            for name in p.follow:
                pointer = int.from_bytes(payload[pos:pos + 8], "little")
                status = payload[pos + 8]
                length = int.from_bytes(payload[pos + 10:pos + 12], "little")
                text = payload[pos + 12:pos + 12 + length]
                pos += 12 + length
                field_type = next(ft for n, _, ft in p.ctype.fields if n == name)
                value[name] = decode_string(field_type, pointer, status, text)["value"]
            out.append({"name": p.name, "type": p.ctype.name, "value": value})
        return out
