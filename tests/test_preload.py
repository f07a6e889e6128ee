"""The seed's own usage with no wrapper: LD_PRELOAD=$(calltrace lib) ./prog."""
from __future__ import annotations

import os
import subprocess

import pytest

from conftest import fixture, lib, load_json, preload_env, shape, validate
from test_run import RECURSION_TREE


def preload(tmp_path, *argv, **env):
    full = preload_env(**env)
    return subprocess.run(list(argv), cwd=tmp_path, env=full, capture_output=True, timeout=120)


def test_seed_usage_leaves_trace_at_exit(tmp_path):
    proc = preload(tmp_path, fixture("recursion"), CALLTRACE_OUTPUT="trace.json")
    assert proc.returncode == 0 and proc.stdout == b"fib=5 sq=25 h=7\n" and proc.stderr == b""
    doc = validate(load_json(tmp_path / "trace.json"))
    assert shape(doc["threads"][0]["calls"]) == RECURSION_TREE
    assert doc["metadata"]["exit_status"] == 0 and doc["metadata"]["termination"] == "exit"
    assert os.listdir(tmp_path) == ["trace.json"]


def test_default_output_name(tmp_path):
    preload(tmp_path, fixture("recursion"))
    assert validate(load_json(tmp_path / "calltrace.json"))["metadata"]["total_calls"] == 21


def test_dev_null_records_nothing(tmp_path):
    proc = preload(tmp_path, fixture("recursion"), CALLTRACE_OUTPUT="/dev/null")
    assert proc.returncode == 0 and proc.stdout == b"fib=5 sq=25 h=7\n"
    assert os.listdir(tmp_path) == []


@pytest.mark.parametrize("how,status,term", [
    ("exit", 3, "exit"), ("abort", -6, "signal"), ("segv", -11, "signal"), ("term", -15, "signal")])
def test_bare_death_still_converts(tmp_path, how, status, term):
    proc = preload(tmp_path, fixture("die"), how, CALLTRACE_OUTPUT="d.json")
    assert proc.returncode == status          # the program dies the way it would alone
    doc = validate(load_json(tmp_path / "d.json"))
    assert [c.get("incomplete") for c in doc["threads"][0]["calls"]] == [True] * 5
    assert doc["metadata"]["termination"] == term
    assert doc["metadata"]["exit_status"] == (status if status >= 0 else 128 - status)


def test_bare_program_handler_preserved(tmp_path):
    proc = preload(tmp_path, fixture("die"), "handled", CALLTRACE_OUTPUT="h.json")
    assert proc.returncode == 7 and proc.stdout == b"handled 15\n"
    doc = validate(load_json(tmp_path / "h.json"))
    assert doc["metadata"]["exit_status"] == 7


@pytest.mark.parametrize("var,value,message", [
    ("CALLTRACE_MAX_DEPTH", "abc", b"calltrace: CALLTRACE_MAX_DEPTH=abc is not a whole number"),
    ("CALLTRACE_MAX_DEPTH", "-3", b"calltrace: CALLTRACE_MAX_DEPTH=-3 is not a whole number"),
    ("CALLTRACE_PRETTY_JSON", "maybe", b"calltrace: CALLTRACE_PRETTY_JSON=maybe is not a boolean"),
    ("CALLTRACE_DEBUG", "2", b"calltrace: CALLTRACE_DEBUG=2 is not a boolean"),
])
def test_bad_env_value_one_line_and_default(tmp_path, var, value, message):
    proc = preload(tmp_path, fixture("recursion"), CALLTRACE_OUTPUT="t.json", **{var: value})
    assert proc.returncode == 0 and proc.stdout == b"fib=5 sq=25 h=7\n"
    assert proc.stderr.startswith(message) and proc.stderr.count(b"\n") == 1
    assert validate(load_json(tmp_path / "t.json"))["metadata"]["total_calls"] == 21


def test_env_options_honoured(tmp_path):
    preload(tmp_path, fixture("deep"), "50", CALLTRACE_OUTPUT="t.json", CALLTRACE_MAX_DEPTH="3",
            CALLTRACE_PRETTY_JSON="1")
    doc = validate(load_json(tmp_path / "t.json"))
    assert doc["metadata"]["total_calls"] == 3 and doc["metadata"]["depth_limited_calls"] == 48
    assert (tmp_path / "t.json").read_text().startswith('{\n  "format": "calltrace"')


def test_debug_diagnostics(tmp_path):
    proc = preload(tmp_path, fixture("recursion"), CALLTRACE_OUTPUT="t.json", CALLTRACE_DEBUG="1")
    err = proc.stderr.decode()
    assert "calltrace: config: output=t.json max_depth=0 (0: unlimited)" in err
    assert "calltrace: recording to " in err and "calltrace: finished (exit 0)" in err
    assert "calltrace: 21 calls, 1 thread: trace written to" in err


def test_exec_without_tracing_python(tmp_path):
    # The converter the runtime starts must not itself be traced or leave files.
    preload(tmp_path, fixture("recursion"), CALLTRACE_OUTPUT="t.json")
    assert sorted(os.listdir(tmp_path)) == ["t.json"]


def test_processes_started_by_the_program_do_not_overwrite_its_trace(tmp_path):
    """system() runs a shell (not instrumented: no trace) that runs an
    instrumented program (a trace of its own, named by pid)."""
    src = tmp_path / "sys.c"
    src.write_text('#include <stdio.h>\n#include <stdlib.h>\n'
                   'void run(const char *p) { fflush(stdout); system(p); }\n'
                   'int main(int argc, char **argv) { run(argv[1]); puts("done"); return 0; }\n')
    exe = tmp_path / "sysprog"
    subprocess.run(["gcc", "-g", "-finstrument-functions", "-rdynamic", str(src), "-o", str(exe)], check=True)
    proc = preload(tmp_path, str(exe), fixture("recursion"), CALLTRACE_OUTPUT="t.json")
    assert proc.returncode == 0 and proc.stdout == b"fib=5 sq=25 h=7\ndone\n"
    main = validate(load_json(tmp_path / "t.json"))
    assert [c["function"] for c in main["threads"][0]["calls"]] == ["main", "run"]
    others = sorted(set(os.listdir(tmp_path)) - {"t.json", "sys.c", "sysprog"})
    assert len(others) == 1 and others[0].startswith("t.") and others[0].endswith(".json")
    child = validate(load_json(tmp_path / others[0]))
    assert child["metadata"]["program"] == fixture("recursion") and child["metadata"]["total_calls"] == 21
