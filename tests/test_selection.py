"""-F/--function, --only and -N/--exclude mean the same in `run` and in
`debug`: both record the same calls, C++ names match demangled in both, and
-F or --only combine with -N."""
from __future__ import annotations

import pytest

from conftest import fixture, load_json, require_tool, run_cli, shape, validate

RECURSION = [(0, "main")] + [(d, "fib") for d in (1, 2, 3, 4, 5, 5, 4, 3, 4, 4, 2, 3, 4, 4, 3)] + [
    (1, "apply"), (2, "square"), (1, "apply"), (2, "square"), (1, "helper")]
FIB = [(d - 1, "fib") for d, f in RECURSION if f == "fib"]

CASES = {
    ("-F", "fib"): FIB,
    ("-F", "main", "-N", "apply|fib"): [(0, "main"), (1, "helper")],
    ("--only", "main|square"): [(0, "main"), (1, "square"), (1, "square")],
    ("--only", "main|square", "-N", "apply"): [(0, "main")],
    ("-N", "fib"): [(0, "main"), (1, "apply"), (2, "square"), (1, "apply"), (2, "square"), (1, "helper")],
    ("-F", "apply", "-N", "square"): [(0, "apply"), (0, "apply")],
}


def calls(path) -> list[tuple[int, str]]:
    doc = validate(load_json(path))
    return [s for t in doc["threads"] for s in shape(t["calls"])]


@pytest.mark.parametrize("selection", list(CASES), ids=" ".join)
def test_run_and_debug_record_the_same_calls(tmp_path, selection):
    require_tool("gdb", "gdb")
    expected = CASES[selection]
    for command in ("run", "debug"):
        out = tmp_path / f"{command}.json"
        proc = run_cli(command, "-q", "-o", out, *selection, fixture("recursion"), cwd=tmp_path, timeout=300)
        assert proc.returncode == 0, (command, proc.stderr.decode())
        assert calls(out) == expected, command


def test_unselected_program_is_whole():
    assert RECURSION[0] == (0, "main") and len(RECURSION) == 21


@pytest.mark.parametrize("command", ["run", "debug"])
def test_cpp_names_match_demangled(tmp_path, command):
    require_tool("gdb", "gdb")
    out = tmp_path / "t.json"
    proc = run_cli(command, "-q", "-o", out, "--only", r"shapes::scale\(int\)|shapes::Circle::area",
                   fixture("names"), cwd=tmp_path, timeout=300)
    assert proc.returncode == 0, proc.stderr.decode()
    assert calls(out) == [(0, "shapes::Circle::area() const"), (0, "shapes::scale(int)")]


def test_uninstrumented_only_and_subtree(tmp_path):
    """--uninstrumented: --only breaks in the named functions; -F follows
    their subtrees through every function with debug info."""
    require_tool("gdb", "gdb")
    out = tmp_path / "t.json"
    exe = fixture("plain_calls")
    proc = run_cli("debug", "-q", "-o", out, "--uninstrumented", "--only", "^main$", exe, cwd=tmp_path,
                   timeout=300)
    assert proc.returncode == 0, proc.stderr.decode()
    assert calls(out) == [(0, "main")]
    proc = run_cli("debug", "-q", "-o", out, "--uninstrumented", "-F", "^main$", exe, cwd=tmp_path, timeout=300)
    assert proc.returncode == 0, proc.stderr.decode()
    subtree = calls(out)
    assert subtree[0] == (0, "main") and len(subtree) > 1 and all(d > 0 for d, _ in subtree[1:])
