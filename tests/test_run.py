"""`calltrace run` end to end on real fixtures: exact trees, counts, statuses."""
from __future__ import annotations

import os

import pytest

from conftest import fixture, load_json, run_cli, shape, validate


def fib_calls(n: int, depth: int) -> list[tuple[int, str]]:
    """The preorder of fixtures/recursion.c's fib(n), as the C code recurses."""
    out = [(depth, "fib")]
    if n >= 2:
        out += fib_calls(n - 1, depth + 1) + fib_calls(n - 2, depth + 1)
    return out


RECURSION_TREE = [(0, "main")] + fib_calls(5, 1) + [
    (1, "apply"), (2, "square"), (1, "apply"), (2, "square"), (1, "helper")]


def trace_of(tmp_path, *args, env=None, input=None, name="t.json"):
    out = tmp_path / name
    proc = run_cli("run", "-o", out, *args, cwd=tmp_path, env=env, input=input)
    assert out.exists(), proc.stderr.decode()
    return proc, validate(load_json(out))


@pytest.mark.parametrize("variant", ["recursion", "recursion-O2"])
def test_recursion_tree_exact(tmp_path, variant):
    proc, doc = trace_of(tmp_path, fixture(variant))
    assert proc.returncode == 0
    assert proc.stdout == b"fib=5 sq=25 h=7\n"
    (thread,) = doc["threads"]
    assert thread["main"] is True
    if variant == "recursion":
        assert shape(thread["calls"]) == RECURSION_TREE
    m = doc["metadata"]
    assert m["total_calls"] == len(thread["calls"])
    assert (m["exit_status"], m["termination"], m["backend"]) == (0, "exit", "runtime")
    assert m["program"] == fixture(variant) and m["argv"] == [fixture(variant)]
    assert m["incomplete_calls"] == m["depth_limited_calls"] == m["dropped_events"] == 0
    assert m["options"]["max_depth"] is None


def test_functions_table_matches_calls(tmp_path):
    _, doc = trace_of(tmp_path, fixture("recursion"))
    table = {f["function"]: f for f in doc["functions"]}
    assert {k: v["calls"] for k, v in table.items()} == {
        "main": 1, "fib": 15, "apply": 2, "square": 2, "helper": 1}
    calls = doc["threads"][0]["calls"]
    for name, f in table.items():
        durations = [c["duration_ns"] for c in calls if c["function"] == name]
        assert f["min_ns"] == min(durations) and f["max_ns"] == max(durations)
    # fib is recursive: its total is its outermost call, not the sum of all levels.
    assert table["fib"]["total_ns"] == next(c["duration_ns"] for c in calls if c["function"] == "fib")
    main = calls[0]
    assert table["main"]["self_ns"] == main["duration_ns"] - sum(
        c["duration_ns"] for c in calls if c["depth"] == 1)
    assert [f["self_ns"] for f in doc["functions"]] == sorted(
        (f["self_ns"] for f in doc["functions"]), reverse=True)
    assert table["helper"]["file"] == "fixtures/recursion.c" and table["helper"]["line"] == 13
    assert table["fib"]["line"] == 7


def test_static_and_pie_names(tmp_path):
    _, doc = trace_of(tmp_path, fixture("recursion"))
    helper = next(f for f in doc["functions"] if f["function"] == "helper")
    assert int(helper["address"], 16) > 0x500000000000   # PIE: loaded high, still resolved


def test_cpp_names_demangled(tmp_path):
    proc, doc = trace_of(tmp_path, fixture("names"))
    assert proc.stdout == b"area 12\n"
    assert shape(doc["threads"][0]["calls"]) == [
        (0, "main"), (1, "shapes::Circle::Circle(double)"), (1, "shapes::Circle::area() const"),
        (1, "int shapes::twice<int>(int)"), (1, "shapes::scale(double)"), (1, "shapes::scale(int)")]
    ctor = next(f for f in doc["functions"] if f["function"] == "shapes::Circle::Circle(double)")
    assert ctor["symbol"].startswith("_ZN6shapes6Circle") and ctor["line"] == 14


def test_threads_each_have_their_own_tree(tmp_path):
    proc, doc = trace_of(tmp_path, fixture("workers"))
    assert proc.stdout == b"sum 6\n"
    main, *workers = doc["threads"]
    assert main["main"] and shape(main["calls"]) == [
        (0, "main"), (1, "spawn"), (1, "spawn"), (1, "spawn"), (1, "total")]
    assert main["tid"] == doc["metadata"]["pid"]
    assert sorted(w["name"] for w in workers) == ["worker-1", "worker-2", "worker-3"]
    for w in workers:
        k = int(w["name"][-1])
        assert shape(w["calls"]) == [(0, "run"), (1, "work")] + [(2, "leaf")] * k
        assert not w["main"]
    assert doc["metadata"]["thread_count"] == 4 and doc["metadata"]["total_calls"] == 5 + 3 + 4 + 5


def test_deep_recursion_5000(tmp_path):
    proc, doc = trace_of(tmp_path, fixture("deep"))
    assert proc.stdout == b"depth 5000\n"
    calls = doc["threads"][0]["calls"]
    assert len(calls) == 5001
    assert [c["depth"] for c in calls] == list(range(5001))
    assert all(c["function"] == "down" for c in calls[1:])


def test_max_depth_drops_and_counts(tmp_path):
    proc, doc = trace_of(tmp_path, fixture("deep"), "100", "--max-depth", "5")
    assert proc.stdout == b"depth 100\n"
    m = doc["metadata"]
    assert shape(doc["threads"][0]["calls"]) == [(0, "main")] + [(d, "down") for d in range(1, 5)]
    assert m["depth_limited_calls"] == 101 - 5 and m["options"]["max_depth"] == 5


@pytest.mark.parametrize("how,status,term,sig", [
    ("exit", 3, "exit", None), ("_exit", 4, "exit", None), ("abort", 134, "signal", 6),
    ("segv", 139, "signal", 11), ("term", 143, "signal", 15)])
def test_death_mid_call_keeps_every_call(tmp_path, how, status, term, sig):
    proc, doc = trace_of(tmp_path, fixture("die"), how)
    assert proc.returncode == status
    calls = doc["threads"][0]["calls"]
    assert shape(calls) == [(0, "main"), (1, "level1"), (2, "level2"), (3, "level3"), (4, "finish")]
    assert all(c.get("incomplete") for c in calls)
    m = doc["metadata"]
    assert (m["exit_status"], m["termination"], m["signal"]) == (status, term, sig)
    assert m["incomplete_calls"] == 5


def test_program_signal_handler_is_its_own(tmp_path):
    proc, doc = trace_of(tmp_path, fixture("die"), "handled")
    assert proc.returncode == 7 and proc.stdout == b"handled 15\n"
    assert shape(doc["threads"][0]["calls"])[-3:] == [(4, "finish"), (5, "handler"), (6, "on_term")]


def test_stdio_args_and_status_pass_through(tmp_path):
    proc, doc = trace_of(tmp_path, fixture("echo"), "a", "b c", "--max-depth", "2", "--",
                         "--max-depth", "-o", input=b"line1\nline2\n")
    assert proc.returncode == 4
    assert proc.stdout == b"arg: a\narg: b c\narg: --max-depth\narg: -o\nline1\nline2\n"
    assert proc.stderr.startswith(b"err\n")
    assert doc["metadata"]["options"]["max_depth"] == 2
    assert doc["metadata"]["argv"][1:] == ["a", "b c", "--max-depth", "-o"]
    assert shape(doc["threads"][0]["calls"]) == [(0, "main")] + [(1, "show")] * 4 + [(1, "copy")]


def test_summary_on_stderr(tmp_path):
    proc, _ = trace_of(tmp_path, fixture("recursion"))
    err = proc.stderr.decode()
    assert "calltrace: 21 calls, 1 thread," in err and "exit status 0" in err
    lines = [l for l in err.splitlines() if l.strip().endswith(("fib", "main", "apply", "square", "helper"))]
    assert sorted(l.split()[-1] for l in lines) == ["apply", "fib", "helper", "main", "square"]
    assert f"trace written to {tmp_path / 't.json'}" in err


def test_pretty_output_is_same_trace(tmp_path):
    _, compact = trace_of(tmp_path, fixture("recursion"), name="c.json")
    _, pretty = trace_of(tmp_path, "--pretty", fixture("recursion"), name="p.json")
    assert shape(compact["threads"][0]["calls"]) == shape(pretty["threads"][0]["calls"])
    text = (tmp_path / "p.json").read_text()
    assert text.startswith('{\n  "format": "calltrace",\n  "version": 1,\n  "metadata": {\n')
    assert pretty["metadata"]["options"]["pretty"] is True


def test_compact_output_has_one_call_per_line(tmp_path):
    trace_of(tmp_path, fixture("recursion"))
    lines = (tmp_path / "t.json").read_text().splitlines()
    assert sum(1 for l in lines if l.startswith('{"function":') and '"depth"' in l) == 21


def test_output_default_and_env(tmp_path):
    proc = run_cli("run", "-q", fixture("recursion"), cwd=tmp_path)
    assert proc.returncode == 0 and (tmp_path / "calltrace.json").exists()
    proc = run_cli("run", "-q", fixture("recursion"), cwd=tmp_path,
                   env={"CALLTRACE_OUTPUT": str(tmp_path / "env.json")})
    assert validate(load_json(tmp_path / "env.json"))["metadata"]["total_calls"] == 21
    assert sorted(os.listdir(tmp_path)) == ["calltrace.json", "env.json"]  # no raw left behind


def _script(tmp_path, body: str) -> str:
    path = tmp_path / "run.sh"
    path.write_text("#!/bin/sh\n" + body + "\n")
    path.chmod(0o755)
    return str(path)


@pytest.mark.parametrize("how", ["", "exec "])
def test_script_starting_one_program_writes_its_trace(tmp_path, how):
    """A wrapper script runs no instrumented code: the one program it starts
    (as a child, or by exec) gets the -o name."""
    script = _script(tmp_path, how + fixture("recursion"))
    proc, doc = trace_of(tmp_path, "-q", script)
    assert (proc.returncode, proc.stdout) == (0, b"fib=5 sq=25 h=7\n")
    assert proc.stderr == b"calltrace: note: " + script.encode() + \
        b" is not an ELF executable; recording the instrumented programs it starts\n"
    assert doc["metadata"]["program"] == fixture("recursion")
    assert shape(doc["threads"][0]["calls"]) == RECURSION_TREE
    assert sorted(os.listdir(tmp_path)) == ["run.sh", "t.json"]


def test_script_starting_two_programs_keeps_both(tmp_path):
    script = _script(tmp_path, f"{fixture('recursion')}\n{fixture('recursion')}")
    proc, doc = trace_of(tmp_path, "-q", script)
    assert (proc.returncode, proc.stdout) == (0, b"fib=5 sq=25 h=7\n" * 2)
    assert doc["metadata"]["total_calls"] == 0 and doc["metadata"]["program"].endswith("sh")
    others = sorted(set(os.listdir(tmp_path)) - {"run.sh", "t.json"})
    assert len(others) == 2 and all(n.startswith("t.") and n.endswith(".json") for n in others)
    for name in others:
        assert shape(validate(load_json(tmp_path / name))["threads"][0]["calls"]) == RECURSION_TREE


def test_script_with_a_filter(tmp_path):
    """No filter file for a script: each program it starts matches its own."""
    script = _script(tmp_path, fixture("recursion"))
    proc, doc = trace_of(tmp_path, "-q", "--function", "^apply$", script)
    assert proc.returncode == 0
    assert shape(doc["threads"][0]["calls"]) == [(0, "apply"), (1, "square")] * 2
