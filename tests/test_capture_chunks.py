"""Argument records across buffer-chunk boundaries (issue 10.1): with 16 KB
chunks, fixtures/argloop.c crosses a chunk boundary every ~50 iterations
with every kind of ARGS record (registers, frame slots, strings of every
length up to the cap, NULL, a struct with a followed string, a double, an
empty record). Capture must add no call, lose none, and decode every value."""
from __future__ import annotations

import pytest

from conftest import fixture, load_json, run_cli, validate

N = 3000
SMALL = {"CALLTRACE_BUFFER_KB": "16"}
NAMES = ["x", "yy", "zzz"]


def expected(i: int, optimized: bool) -> list[tuple]:
    """(function, [(name, value, note)]) of iteration i."""
    n = i % 301
    s = None if i % 13 == 0 else "a" * min(n, 256)
    s_note = "truncated" if s is not None and n > 256 else None
    # At -O2, `i` is only in the register it came in (an entry value), and
    # the caller's DWARF gives no constant for it.
    first = (None, "not captured") if optimized else (i, None)
    return [
        ("s_ints", [("i", *first), ("j", 4294967296 + i, None)]),
        ("s_str", [("s", s, s_note)]),
        ("s_rec", [("r", {"id": i, "name": NAMES[i % 3], "w": i * 0.5}, None)]),
        ("s_dbl", [("d", -0.25 * i if i % 2 else 0.25 * i, None)]),
        ("s_none", []),
    ]


def trace(tmp_path, variant: str, *extra: str) -> dict:
    out = tmp_path / f"{variant}{len(extra)}.json"
    proc = run_cli("run", *extra, "-o", out, fixture(variant), str(N), cwd=tmp_path, env=SMALL)
    assert proc.returncode == 0 and proc.stdout.startswith(b"argloop "), proc.stderr.decode()
    return validate(load_json(out))


@pytest.mark.parametrize("variant", ["argloop", "argloop-O2"])
def test_args_across_chunk_boundaries(tmp_path, variant):
    plain = trace(tmp_path, variant)
    doc = trace(tmp_path, variant, "--capture-args")
    assert plain["metadata"]["total_calls"] == doc["metadata"]["total_calls"] == 1 + 5 * N
    assert "notes" not in doc["metadata"], doc["metadata"]["notes"]   # e.g. returns without a call
    calls = doc["threads"][0]["calls"]
    assert calls[0]["function"] == "main" and all(c["depth"] == 1 for c in calls[1:])
    for i in range(N):
        for k, (fn, args) in enumerate(expected(i, variant.endswith("-O2"))):
            call = calls[1 + 5 * i + k]
            assert call["function"] == fn and "args_note" not in call, (i, call)
            got = [(a["name"], a["value"], a.get("note")) for a in call["args"]]
            assert got == args, (i, call)
