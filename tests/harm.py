"""Helpers of the fault-injection tests (tests/test_harm_*.py, issue 9): run a
program natively, under a bare LD_PRELOAD and under `calltrace run`, each in
a session of its own killed whole after a bound, and compare what the
program shows (stdout, exit status) across the three."""
from __future__ import annotations

import os
import signal
import subprocess
import sys

import pytest

from conftest import ROOT, clean_env, lib, load_json, run_cli, validate

BOUND = 120   # seconds: every run here ends well within this, or fails


def bounded(argv, cwd, env=None, timeout: float = BOUND, input: bytes | None = None
            ) -> subprocess.CompletedProcess:
    """Run `argv` in a session of its own; after `timeout` seconds kill the
    whole process group and fail the test."""
    proc = subprocess.Popen([str(a) for a in argv], cwd=cwd, env=clean_env(**(env or {})), start_new_session=True,
                            stdin=subprocess.PIPE if input is not None else subprocess.DEVNULL,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        out, err = proc.communicate(input, timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
        pytest.fail(f"{' '.join(map(str, argv))} did not end within {timeout} s")
    finally:
        try:   # nothing the run started outlives the test
            os.killpg(proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


def native(argv, cwd, env=None) -> subprocess.CompletedProcess:
    return bounded(argv, cwd, env)


def bare(argv, cwd, output="t.json", env=None, timeout: float = BOUND) -> subprocess.CompletedProcess:
    full = {"LD_PRELOAD": lib(), "CALLTRACE_OUTPUT": output, **(env or {})}
    return bounded(argv, cwd, full, timeout)


def run(argv, cwd, *opts, output="t.json", env=None, timeout: float = BOUND) -> subprocess.CompletedProcess:
    return bounded([sys.executable, "-m", "calltrace", "run", "-q", "-o", output, *opts, *argv], cwd, env,
                   timeout)


def same_as_native(traced: subprocess.CompletedProcess, ref: subprocess.CompletedProcess) -> None:
    """The program's stdout and exit status are what they are without us.
    (`calltrace run` exits 128+N where the program died of signal N.)"""
    assert traced.stdout == ref.stdout, (traced.stdout, ref.stdout, traced.stderr)
    rc = 128 - ref.returncode if ref.returncode < 0 else ref.returncode
    got = 128 - traced.returncode if traced.returncode < 0 else traced.returncode
    assert got == rc, (traced.returncode, ref.returncode, traced.stderr.decode(errors="replace"))


def bare_as_native(argv, cwd, stdout: bytes) -> dict:
    """The program alone prints `stdout`; under a bare LD_PRELOAD it shows the
    same and writes nothing of ours to stderr. Returns the trace (t.json)."""
    ref = native(argv, cwd)
    assert ref.stdout == stdout
    proc = bare(argv, cwd)
    same_as_native(proc, ref)
    assert proc.stderr == b""
    return trace(os.path.join(cwd, "t.json"))


def trace(path) -> dict:
    return validate(load_json(path))


def calls(doc: dict, thread: int = 0) -> list[tuple[int, str]]:
    return [(c["depth"], c["function"]) for c in doc["threads"][thread]["calls"]]


__all__ = ["BOUND", "ROOT", "bare", "bounded", "calls", "clean_env", "lib", "native", "run", "same_as_native",
           "trace"]
