"""Issue 9.8 and 9.9: the runtime reads its configuration from the process
itself when code in .preinit_array runs it before libc set `environ`; the
bare-mode converter never imports calltrace from the working folder, and it
is a child the program can neither see nor reap."""
from __future__ import annotations

import os

import pytest

from conftest import fixture
from harm import bare, bare_as_native, calls, native, run, same_as_native, trace

PREINIT = [(0, "early"), (1, "early_work"), (0, "main"), (1, "late")]


@pytest.mark.parametrize("opt", ["", "-O2"])
def test_preinit_array_code_sees_calltrace_settings_bare(tmp_path, opt):
    argv = [fixture("preinit" + opt)]
    ref = native(argv, tmp_path)
    assert ref.stdout == b"early 3 env 1 late 8\n"
    (tmp_path / "out").mkdir()
    proc = bare(argv, tmp_path, output="out/p.json", env={"CALLTRACE_MAX_DEPTH": "1"})
    same_as_native(proc, ref)
    assert proc.stderr == b""
    assert os.listdir(tmp_path) == ["out"] and os.listdir(tmp_path / "out") == ["p.json"]
    doc = trace(tmp_path / "out" / "p.json")
    assert calls(doc) == [(0, "early"), (0, "main")]          # CALLTRACE_MAX_DEPTH=1 was read
    assert doc["metadata"]["depth_limited_calls"] == 2 and doc["metadata"]["exit_status"] == 0


def test_preinit_array_code_under_run(tmp_path):
    argv = [fixture("preinit")]
    ref = native(argv, tmp_path)
    proc = run(argv, tmp_path, output="p.json")
    same_as_native(proc, ref)
    assert os.listdir(tmp_path) == ["p.json"]
    doc = trace(tmp_path / "p.json")
    assert calls(doc) == PREINIT and doc["metadata"]["exit_status"] == 0


def test_converter_ignores_calltrace_folder_in_cwd(tmp_path):
    """A folder named calltrace/ where the program runs (a source checkout)
    is not what the bare-mode converter imports."""
    fake = tmp_path / "calltrace"
    fake.mkdir()
    (fake / "__init__.py").write_text("open('IMPORTED', 'w').close()\n")
    (fake / "__main__.py").write_text("raise SystemExit(3)\n")
    argv = [fixture("recursion")]
    ref = native(argv, tmp_path)
    proc = bare(argv, tmp_path, env={"CALLTRACE_CAPTURE_ARGS": "1"})   # plan made at start-up too
    same_as_native(proc, ref)
    assert proc.stderr == b""
    assert sorted(os.listdir(tmp_path)) == ["calltrace", "t.json"]
    doc = trace(tmp_path / "t.json")
    assert doc["metadata"]["total_calls"] == 21 and doc["metadata"]["options"]["capture_args"]


def test_converter_when_program_ignores_sigchld(tmp_path):
    argv = [fixture("reaper"), "ignore"]
    doc = bare_as_native(argv, tmp_path, b"sum 55\n")
    assert calls(doc) == [(0, "main")] + [(1, "work")] * 10


def test_converter_is_not_a_child_the_program_reaps(tmp_path):
    argv = [fixture("reaper"), "reap"]
    ref = native(argv, tmp_path)
    assert ref.stdout == b"own child\nsum 55\n" and ref.returncode == -15
    proc = bare(argv, tmp_path)
    same_as_native(proc, ref)                  # no "foreign child": it never saw the converter
    assert proc.stderr == b""
    doc = trace(tmp_path / "t.json")
    assert calls(doc) == [(0, "main"), (1, "on_chld")] + [(1, "work")] * 10
    assert (doc["metadata"]["termination"], doc["metadata"]["signal"]) == ("signal", 15)


@pytest.mark.parametrize("mode", ["bare", "run"])
@pytest.mark.parametrize("close", ["<&-", ">&-"])
def test_program_started_with_stdin_or_stdout_closed(tmp_path, mode, close):
    """A program started with fd 0 or 1 closed: its reads or writes fail as
    they do natively, and the runtime's files never take the number (the
    program used to read the raw stream as its input, or write its output
    into it, which then did not convert)."""
    import sys
    from harm import bounded, lib
    closed = ["sh", "-c", f'exec "$0" "$@" {close}']
    argv = [fixture("echo"), "a"]
    ref = bounded([*closed, *argv], tmp_path)
    if mode == "bare":
        proc = bounded([*closed, *argv], tmp_path, {"LD_PRELOAD": lib(), "CALLTRACE_OUTPUT": "t.json"})
    else:
        proc = bounded([*closed, sys.executable, "-m", "calltrace", "run", "-q", "-o", "t.json", *argv], tmp_path)
    same_as_native(proc, ref)
    assert proc.stderr == ref.stderr and ref.stderr.endswith(b"err\n")
    # bare: sh preloaded too execs echo, whose image is named as a later one
    (name,) = os.listdir(tmp_path)
    assert name == "t.json" if mode == "run" else name.startswith("t.") and name.endswith("-1.json")
    assert calls(trace(tmp_path / name)) == [(0, "main"), (1, "show"), (1, "copy")]
