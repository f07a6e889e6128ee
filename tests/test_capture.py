"""Argument capture in the fast runtime (`calltrace run --capture-args`,
CALLTRACE_CAPTURE_ARGS=1): every value of fixtures/argtypes.c, exactly."""
from __future__ import annotations

import os
import re
import subprocess

import pytest

from conftest import ROOT, fixture, load_json, run_cli, validate
from test_preload import preload

HEX = re.compile(r"^0x[0-9a-f]+$")
X300 = "x" * 256

# (function, [(name, type, value, note)]) in call order; "PTR" = any non-NULL hex.
ARGTYPES = [
    ("main", []),
    ("f_i8", [("v", "int8_t", -128, None)]),
    ("f_u8", [("v", "uint8_t", 255, None)]),
    ("f_i16", [("v", "int16_t", -32768, None)]),
    ("f_u16", [("v", "uint16_t", 65535, None)]),
    ("f_i32", [("v", "int32_t", -2147483648, None)]),
    ("f_u32", [("v", "uint32_t", 4294967295, None)]),
    ("f_i64", [("v", "int64_t", -9223372036854775808, None)]),
    ("f_u64", [("v", "uint64_t", 18446744073709551615, None)]),
    ("f_ints", [("a", "int", -1, None), ("b", "long int", 0, None), ("c", "short int", 1, None),
                ("d", "unsigned int", 42, None)]),
    ("f_char", [("v", "char", "A", None)]),
    ("f_char", [("v", "char", "\n", None)]),
    ("f_schar", [("v", "signed char", "\\xff", None)]),
    ("f_bool", [("v", "_Bool", True, None)]),
    ("f_bool", [("v", "_Bool", False, None)]),
    ("f_float", [("v", "float", 1.5, None)]),
    ("f_double", [("v", "double", -0.25, None)]),
    ("f_ldouble", [("v", "long double", 3.0, None)]),
    ("f_enum", [("v", "enum color", "GREEN", None)]),
    ("f_enum", [("v", "enum color", 7, None)]),
    ("f_str", [("s", "const char *", "hello", None)]),
    ("f_str", [("s", "const char *", None, None)]),
    ("f_str", [("s", "const char *", X300, "truncated")]),
    ("f_struct", [("p", "struct point", {"x": 1, "y": -2, "name": "pt", "w": 0.5}, None)]),
    ("f_union", [("u", "union word", {"i": 65, "c": "A"}, None)]),
    ("f_ptr", [("p", "struct point *", "PTR", None)]),
    ("f_ptr", [("p", "struct point *", "0x0", None)]),
    ("f_array", [("arr", "int *", "PTR", None), ("n", "int", 3, None)]),
    ("f_fnptr", [("fn", "int (*)(int, int)", "FNPTR compare", None)]),
    ("apply_cmp", [("fn", "int (*)(int, int)", "FNPTR compare", None), ("a", "int", 3, None),
                   ("b", "int", 4, None)]),
    ("compare", [("a", "int", 3, None), ("b", "int", 4, None)]),
    ("f_variadic", [("count", "int", 2, None)]),
    ("make_pair", [("a", "long int", 3, None), ("b", "long int", 4, None)]),
    ("make_vec", [("x", "float", 1.0, None), ("y", "float", 2.0, None)]),
]
# What -O2 code no longer holds at the entry hook, as its DWARF says (f_union's
# u has no location there; the caller's call site gives the value passed).
O2_OPTIMIZED_OUT: set[str] = set()


def check(calls: list[dict], optimized_out: set[str]) -> None:
    assert [c["function"] for c in calls] == [f for f, _ in ARGTYPES]
    for call, (fn, expected) in zip(calls, ARGTYPES):
        assert "args" in call, (fn, call.get("args_note"))
        got = call["args"]
        assert [a["name"] for a in got] == [e[0] for e in expected], fn
        for arg, (name, typ, value, note) in zip(got, expected):
            assert arg["type"] == typ, (fn, name, arg)
            if fn in optimized_out:
                assert arg["value"] is None and arg["note"] == "optimized out", (fn, arg)
                continue
            if value == "PTR":
                assert HEX.match(arg["value"]) and arg["value"] != "0x0", (fn, arg)
            elif isinstance(value, str) and value.startswith("FNPTR "):
                assert re.match(r"^0x[0-9a-f]+ <%s>$" % value[6:], arg["value"]), (fn, arg)
            else:
                assert arg["value"] == value and type(arg["value"]) is type(value), (fn, name, arg)
            assert arg.get("note") == note, (fn, arg)


def captured(tmp_path, variant: str, *extra) -> dict:
    out = tmp_path / f"{variant}.json"
    proc = run_cli("run", "--capture-args", "-o", out, fixture(variant), *extra, cwd=tmp_path)
    assert proc.returncode == 0 and proc.stdout == b"argtypes done\n", proc.stderr.decode()
    doc = validate(load_json(out))
    assert doc["metadata"]["options"]["capture_args"] is True
    return doc


def test_every_type_class_at_O0(tmp_path):
    check(captured(tmp_path, "argtypes")["threads"][0]["calls"], set())


def test_every_type_class_at_O2(tmp_path):
    check(captured(tmp_path, "argtypes-O2")["threads"][0]["calls"], O2_OPTIMIZED_OUT)


def test_same_pointer_seen_twice(tmp_path):
    calls = captured(tmp_path, "argtypes")["threads"][0]["calls"]
    fn = [c["args"][0]["value"] for c in calls if c["function"] in ("f_fnptr", "apply_cmp")]
    assert fn[0] == fn[1]
    compare = next(f for f in load_json(tmp_path / "argtypes.json")["functions"] if f["function"] == "compare")
    assert fn[0] == f"{compare['address']} <compare>"


def test_bare_preload_env_var(tmp_path):
    proc = preload(tmp_path, fixture("argtypes"), CALLTRACE_OUTPUT="t.json", CALLTRACE_CAPTURE_ARGS="1")
    assert proc.returncode == 0 and proc.stdout == b"argtypes done\n" and proc.stderr == b""
    check(validate(load_json(tmp_path / "t.json"))["threads"][0]["calls"], set())
    assert sorted(os.listdir(tmp_path)) == ["t.json"]   # the plan file is gone too


def test_program_without_debug_info(tmp_path):
    exe = tmp_path / "nodebug"
    subprocess.run(["gcc", "-O0", "-finstrument-functions", "-rdynamic",
                    str(ROOT / "fixtures" / "recursion.c"), "-o", str(exe)], check=True)
    proc = run_cli("run", "--capture-args", "-o", tmp_path / "t.json", exe, cwd=tmp_path)
    assert proc.returncode == 0
    doc = validate(load_json(tmp_path / "t.json"))
    assert doc["metadata"]["total_calls"] == 21
    assert any("no DWARF debug info" in n and "arguments not captured" in n for n in doc["metadata"]["notes"])
    for c in doc["threads"][0]["calls"]:
        assert "args" not in c and c["args_note"].startswith("no DWARF")
    assert b"no DWARF debug info" in proc.stderr


def test_depth_limit_and_capture(tmp_path):
    doc = captured(tmp_path, "argtypes", "--max-depth", "1")
    assert [c["function"] for c in doc["threads"][0]["calls"]] == ["main"]
    assert doc["metadata"]["depth_limited_calls"] == len(ARGTYPES) - 1


@pytest.mark.parametrize("variant", ["argtypes", "argtypes-O2"])
def test_same_values_as_gdb_backend(tmp_path, variant):
    """Differential: wherever both backends have a value, it is the same."""
    fast = captured(tmp_path, variant)["threads"][0]["calls"]
    out = tmp_path / "gdb.json"
    proc = run_cli("debug", "--capture-args", "-o", out, fixture(variant), cwd=tmp_path, timeout=300)
    assert proc.returncode == 0, proc.stderr.decode()
    slow = validate(load_json(out))["threads"][0]["calls"]
    assert [c["function"] for c in fast] == [c["function"] for c in slow]
    compared = 0
    for a, b in zip(fast, slow):
        for x, y in zip(a.get("args", []), b.get("args", [])):
            assert x["name"] == y["name"]
            if x.get("note") or y.get("note") or x["value"] is None or y["value"] is None:
                continue
            xv, yv = x["value"], y["value"]
            if isinstance(xv, str) and re.match(r"^0x[0-9a-f]+ <", xv):
                xv, yv = xv.split(" ", 1)[1], yv.split(" ", 1)[1]   # ASLR moves the address
            elif isinstance(xv, str) and HEX.match(xv) and xv != "0x0":
                assert HEX.match(yv) and yv != "0x0"   # two runs, two stack layouts
                continue
            assert xv == yv, (a["function"], x, y)
            compared += 1
    # every scalar, string, struct and function pointer of the fixture
    assert compared == {"argtypes": 38, "argtypes-O2": 38}[variant]
