"""Captured argument bytes -> the `args` list of each call (FORMAT.md VALUE).

The payload layout follows the plan's ops (symbols/plan.py): each op's bytes
in order; a string op adds a status byte, a length byte and the text."""
from __future__ import annotations

import json

from ..symbols.plan import CapturePlan, FunctionPlan
from ..symbols.values import decode, decode_string

NO_DWARF = b',"args_note":"no DWARF parameter info for this function (build with -g)"'
NO_MATCH = b',"args_note":"arguments not captured at this call"'


class ArgsDecoder:
    """One per conversion: function index -> plan, results memoized on the
    exact payload bytes (loops repeat arguments often)."""

    def __init__(self, plan: CapturePlan, bias: int, addrs: list[int], symbolize):
        self.plan = plan
        self.bias = bias
        self.symbolize = symbolize
        self.sites = plan.ordered()
        self.defined = [a - bias in plan.defined for a in addrs]
        self._memo: dict[tuple[int, bytes], bytes] = {}

    def notes(self) -> list[bytes | None]:
        """What a call without an ARGS record says instead."""
        return [NO_MATCH if d else NO_DWARF for d in self.defined]

    def __call__(self, fidx: int, site: int, payload: bytes) -> bytes:
        key = (site, payload)
        hit = self._memo.get(key)
        if hit is None:
            plan = self.sites[site] if site < len(self.sites) else None
            hit = NO_MATCH if plan is None else b',"args":' + json.dumps(
                self.values(plan, payload), ensure_ascii=False, separators=(",", ":")).encode()
            if len(self._memo) < 100_000:
                self._memo[key] = hit
        return hit

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
                site = int.from_bytes(raw, "little") - self.bias
                const = self.plan.call_values.get((site, p.entry_reg))
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
