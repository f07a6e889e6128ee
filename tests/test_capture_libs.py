"""Argument capture in shared libraries: fixtures/linked.c calls into
fixtures/lib/shapes.c (linked at build time, found through RUNPATH), whose
arguments are captured like the executable's own; a dlopen'd library gets
a plan of its own when it is loaded."""
from __future__ import annotations

import os
import shutil
import subprocess

import pytest

from calltrace.symbols.elf import is_instrumented
from calltrace.symbols.libraries import instrumented_libraries, loaded_libraries
from calltrace.symbols.plan import program_plan
from conftest import FIXTURES, ROOT, fixture, load_json, run_cli, validate
from test_preload import preload

POINT_A, POINT_B = {"x": 1, "y": 2}, {"x": 4, "y": 6}
# (depth, function, [(name, type, value)]) in call order
LINKED = [
    (0, "main", []),
    (1, "measure", [("k", "int", 3)]),
    (2, "shape_area", [("a", "struct point", POINT_A), ("b", "struct point", POINT_B),
                       ("u", "enum unit", "CM")]),
    (3, "scaled", [("v", "long int", 12), ("u", "enum unit", "CM")]),
    (1, "shape_label", [("name", "const char *", "box"), ("id", "long int", -7),
                        ("ratio", "double", 1.5)]),
]
LIB_FUNCS = {"shape_area", "scaled", "shape_label"}


def shape(doc: dict) -> list:
    (thread,) = doc["threads"]
    out = []
    for c in thread["calls"]:
        assert "args" in c, (c["function"], c.get("args_note"))
        out.append((c["depth"], c["function"], [(a["name"], a["type"], a["value"]) for a in c["args"]]))
    return out


@pytest.mark.parametrize("variant", ["linked", "linked-O2"])
def test_run_captures_library_arguments(tmp_path, variant):
    proc = run_cli("run", "-q", "--capture-args", "-o", "t.json", fixture(variant), cwd=tmp_path)
    assert (proc.returncode, proc.stdout, proc.stderr) == (0, b"area=120 label=-3\n", b"")
    doc = validate(load_json(tmp_path / "t.json"))
    assert shape(doc) == LINKED
    lib = os.path.realpath(os.path.join(FIXTURES, "libshapes.so" if variant == "linked" else "libshapes-O2.so"))
    funcs = {f["function"]: f for f in doc["functions"]}
    for name in LIB_FUNCS:
        assert os.path.realpath(funcs[name]["module"]) == lib and funcs[name]["file"] == "fixtures/lib/shapes.c"
    assert (funcs["scaled"]["line"], funcs["shape_area"]["line"], funcs["shape_label"]["line"]) == (12, 16, 21)


def test_bare_preload_captures_library_arguments(tmp_path):
    proc = preload(tmp_path, fixture("linked-O2"), CALLTRACE_OUTPUT="t.json", CALLTRACE_CAPTURE_ARGS="1")
    assert (proc.returncode, proc.stdout, proc.stderr) == (0, b"area=120 label=-3\n", b"")
    assert shape(validate(load_json(tmp_path / "t.json"))) == LINKED
    assert sorted(os.listdir(tmp_path)) == ["t.json"]


def test_same_library_values_as_gdb_backend(tmp_path):
    proc = run_cli("debug", "-q", "--capture-args", "-o", "g.json", fixture("linked-O2"), cwd=tmp_path,
                   timeout=300)
    assert proc.returncode == 0, proc.stderr.decode()
    # GDB spells some types its own way ("long" for DWARF's "long int")
    untyped = [(d, f, [(n, v) for n, _, v in args]) for d, f, args in LINKED]
    assert [(d, f, [(n, v) for n, _, v in args])
            for d, f, args in shape(validate(load_json(tmp_path / "g.json")))] == untyped


DLOPENER = [("main", None), ("load", None), ("use", 3), ("plugin_entry", 3), ("twice", 3),
            ("use", 4), ("plugin_entry", 4), ("twice", 4)]


def dlopened(calls: list[dict]) -> None:
    assert [c["function"] for c in calls] == [f for f, _ in DLOPENER]
    for c, (fn, x) in zip(calls, DLOPENER):
        assert "args" in c and "args_note" not in c, c
        if x is not None:
            assert {a["name"]: a["value"] for a in c["args"]}["x"] == x, c


def test_dlopened_library_gets_arguments(tmp_path):
    """libplugin.so (-O2) is dlopen'ed after the start: planned when the
    program next uses the dynamic linker (its dlsym), before its code runs."""
    proc = run_cli("run", "-q", "--capture-args", "-o", "t.json", fixture("dlopener"), cwd=tmp_path)
    assert proc.returncode == 0 and proc.stdout == b"plugin 7 9\n" and proc.stderr == b""
    dlopened(validate(load_json(tmp_path / "t.json"))["threads"][0]["calls"])
    assert sorted(os.listdir(tmp_path)) == ["t.json"]   # no plan file left behind


def test_dlopened_library_bare_preload(tmp_path):
    proc = preload(tmp_path, fixture("dlopener"), CALLTRACE_OUTPUT="t.json", CALLTRACE_CAPTURE_ARGS="1")
    assert proc.returncode == 0 and proc.stdout == b"plugin 7 9\n" and proc.stderr == b""
    dlopened(validate(load_json(tmp_path / "t.json"))["threads"][0]["calls"])
    assert sorted(os.listdir(tmp_path)) == ["t.json"]


def test_library_without_dwarf(tmp_path):
    """The library built without -g: its calls say so, the program's have args."""
    subprocess.run(["gcc", "-O0", "-finstrument-functions", "-fPIC", "-shared",
                    str(ROOT / "fixtures" / "lib" / "shapes.c"), "-o", str(tmp_path / "libshapes.so")],
                   check=True)
    subprocess.run(["gcc", "-g", "-O0", "-finstrument-functions", "-rdynamic", str(ROOT / "fixtures" / "linked.c"),
                    "-o", str(tmp_path / "linked"), f"-L{tmp_path}", "-lshapes", "-Wl,-rpath,$ORIGIN"], check=True)
    proc = run_cli("run", "-q", "--capture-args", "-o", "t.json", tmp_path / "linked", cwd=tmp_path)
    assert proc.returncode == 0 and proc.stdout == b"area=120 label=-3\n"
    calls = validate(load_json(tmp_path / "t.json"))["threads"][0]["calls"]
    assert [c["function"] for c in calls] == [f for _, f, _ in LINKED]
    for c in calls:
        if c["function"] in LIB_FUNCS:
            assert c["args_note"] == "no DWARF parameter info for this function (build with -g)", c
        else:
            assert "args" in c
    assert calls[1]["args"] == [{"name": "k", "type": "int", "value": 3}]


def test_library_lookup():
    lib = os.path.realpath(os.path.join(FIXTURES, "libshapes.so"))
    libs = loaded_libraries(fixture("linked"))
    assert lib in libs and any(os.path.basename(p).startswith("libc.so") for p in libs)
    assert instrumented_libraries(fixture("linked")) == [lib]
    assert is_instrumented(lib) and not is_instrumented(next(p for p in libs if "libc.so" in p))
    assert instrumented_libraries(fixture("recursion")) == []
    plan = program_plan(os.path.realpath(fixture("linked")))
    assert plan.paths == [os.path.realpath(fixture("linked")), lib]
    assert sorted({m for m, _ in plan.ordered()}) == [0, 1]


def test_planned_library_not_loaded(tmp_path):
    """A plan names library files: when the program loads another copy (the
    environment changed since planning), that library's functions are left
    out, with a note, and the executable's are still captured."""
    for folder in ("a", "b"):
        (tmp_path / folder).mkdir()
        for name in ("linked", "libshapes.so"):
            shutil.copy(os.path.join(FIXTURES, name), tmp_path / folder / name)
    exe = os.path.realpath(tmp_path / "a" / "linked")
    plan = program_plan(exe, libraries=[os.path.realpath(tmp_path / "b" / "libshapes.so")])
    (tmp_path / "p.plan").write_bytes(plan.serialize())
    proc = preload(tmp_path, exe, CALLTRACE_OUTPUT="t.json", CALLTRACE_CAPTURE_ARGS="1",
                   CALLTRACE_PLAN=str(tmp_path / "p.plan"))
    assert (proc.returncode, proc.stdout, proc.stderr) == (0, b"area=120 label=-3\n", b"")
    calls = validate(load_json(tmp_path / "t.json"))["threads"][0]["calls"]
    assert [c["function"] for c in calls] == [f for _, f, _ in LINKED]
    for c in calls:
        if c["function"] in LIB_FUNCS:
            assert "args" not in c and c["args_note"].endswith("not in this module"), c
    assert calls[1]["args"] == [{"name": "k", "type": "int", "value": 3}]


@pytest.mark.parametrize("variant", ["linked", "linked-O2"])
def test_debug_function_selection_reaches_into_library(tmp_path, variant):
    """calltrace debug --only: breakpoints on the hook calls of the
    selected functions, in the executable and in libshapes (placed when the
    library is loaded)."""
    proc = run_cli("debug", "-q", "--capture-args", "--only", "^(measure|shape_label|scaled)$", "-o", "g.json",
                   fixture(variant), cwd=tmp_path, timeout=300)
    assert (proc.returncode, proc.stdout) == (0, b"area=120 label=-3\n"), proc.stderr.decode()
    calls = validate(load_json(tmp_path / "g.json"))["threads"][0]["calls"]
    assert [(c["depth"], c["function"], [a["value"] for a in c["args"]]) for c in calls] == [
        (0, "measure", [3]), (1, "scaled", [12, "CM"]), (0, "shape_label", ["box", -7, 1.5])]


def test_debug_selection_matching_nothing(tmp_path):
    proc = run_cli("debug", "-F", "^nothing_here$", fixture("linked"), cwd=tmp_path)
    assert proc.returncode == 2
    assert proc.stderr == (b"calltrace: error: no function of " + fixture("linked").encode() +
                           b" or of the instrumented libraries it loads matches --function '^nothing_here$'\n")


def test_unreadable_or_foreign_plan_and_filter(tmp_path):
    """A file handed to the runtime that is not what it should be: one line,
    the program unharmed, the run recorded without it."""
    junk = tmp_path / "junk"
    junk.write_bytes(b"not a file calltrace wrote, at all")
    proc = preload(tmp_path, fixture("recursion"), CALLTRACE_OUTPUT="p.json", CALLTRACE_CAPTURE_ARGS="1",
                   CALLTRACE_PLAN=str(junk))
    assert (proc.returncode, proc.stdout) == (0, b"fib=5 sq=25 h=7\n")
    assert proc.stderr == f"calltrace: {junk} is not a calltrace capture plan; arguments not captured\n".encode()
    calls = validate(load_json(tmp_path / "p.json"))["threads"][0]["calls"]
    assert len(calls) == 21 and all("args" not in c for c in calls)
    for path, message in ((junk, f"{junk} is not a calltrace filter"),
                          (tmp_path / "missing", f"cannot read the filter {tmp_path / 'missing'}: "
                                                 "No such file or directory")):
        proc = preload(tmp_path, fixture("recursion"), CALLTRACE_OUTPUT="f.json", CALLTRACE_FILTER=str(path))
        assert (proc.returncode, proc.stdout) == (0, b"fib=5 sq=25 h=7\n")
        assert proc.stderr == f"calltrace: {message}; recording everything\n".encode()
        assert validate(load_json(tmp_path / "f.json"))["metadata"]["total_calls"] == 21
