"""Shared test helpers: fixture binaries, running the installed CLI, schema checks.

Fixtures are built by `make fixtures` into build/fixtures (NAME and NAME-O2).
Tests never skip a missing tool: they fail naming the package to install.
"""
from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
from pathlib import Path

import jsonschema
import pytest
import referencing
import referencing.jsonschema

import calltrace

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = ROOT / "build" / "fixtures"
SCHEMA = json.loads((Path(calltrace.__file__).parent / "trace" / "schema.json").read_text())
_validator = jsonschema.Draft202012Validator(SCHEMA)
FOOTER_SCHEMA = json.loads((Path(calltrace.__file__).parent / "trace" / "footer.schema.json").read_text())
_footer_validator = jsonschema.Draft202012Validator(
    FOOTER_SCHEMA, registry=referencing.Registry().with_resource(
        SCHEMA["$id"], referencing.jsonschema.DRAFT202012.create_resource(SCHEMA)))


@pytest.fixture(scope="session", autouse=True)
def _scratch(tmp_path_factory):
    """Every temporary file of the session (ours, calltrace's, a traced
    program's) goes under pytest's folder: a test that kills calltrace
    mid-run cannot leave its work folder in /tmp, and the session removes it."""
    d = tmp_path_factory.mktemp("scratch")
    old = os.environ.get("TMPDIR")
    os.environ["TMPDIR"] = str(d)
    tempfile.tempdir = None
    yield d
    if old is None:
        os.environ.pop("TMPDIR", None)
    else:
        os.environ["TMPDIR"] = old
    tempfile.tempdir = None
    shutil.rmtree(d, ignore_errors=True)


@pytest.fixture(scope="session", autouse=True)
def _default_keyboard_signals():
    """A suite started in the background (`make test &`, nohup) inherits
    SIGINT and SIGQUIT ignored, and every program it starts with them: the
    tests that send them would test the shell's choice, not ours. The
    session runs with their defaults and puts the inherited ones back."""
    old = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGQUIT)}
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGQUIT, signal.SIG_DFL)
    yield
    for s, h in old.items():
        signal.signal(s, h if h is not None else signal.SIG_DFL)


@pytest.fixture(autouse=True)
def _dev_null_stays():
    """/dev/null must still be the null device after every test: a tool
    that renames a file over it (we run as root) feeds every later program
    the bytes written there. Put back at once, so one culprit fails alone."""
    yield
    st = os.stat("/dev/null") if os.path.exists("/dev/null") else None
    if st is None or not stat.S_ISCHR(st.st_mode):
        if st is not None:
            os.unlink("/dev/null")
        os.mknod("/dev/null", 0o666 | stat.S_IFCHR, os.makedev(1, 3))
        os.chmod("/dev/null", 0o666)
        pytest.fail("this test replaced /dev/null with a regular file")
    for n, link in enumerate(("/dev/stdin", "/dev/stdout", "/dev/stderr")):
        if not os.path.islink(link):
            if os.path.lexists(link):
                os.unlink(link)
            os.symlink(f"/proc/self/fd/{n}", link)
            pytest.fail(f"this test replaced {link}")


def fixture(name: str) -> str:
    """Path of a built fixture binary (e.g. "recursion" or "recursion-O2")."""
    path = FIXTURES / name
    if not path.exists():
        pytest.fail(f"fixture {path} is not built: run `make fixtures`")
    return str(path)


def require_tool(cmd: str, package: str) -> str:
    path = shutil.which(cmd)
    if path is None:
        pytest.fail(f"`{cmd}` is missing: install the Debian package {package} (make sysdeps)")
    return path


def clean_env(**extra: str) -> dict:
    """The tests' environment without CALLTRACE_* and LD_PRELOAD (so a
    traced shell running the tests changes nothing), plus `extra`."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("CALLTRACE_") and k != "LD_PRELOAD"}
    env.update(extra)
    return env


def preload_env(**extra: str) -> dict:
    """clean_env with the runtime preloaded: the seed's bare LD_PRELOAD use."""
    return clean_env(LD_PRELOAD=lib(), **extra)


_LIB: list[str] = []


def lib() -> str:
    """libcalltrace.so as the installed CLI reports it (`calltrace lib`)."""
    if not _LIB:
        path = run_cli("lib", check=True).stdout.decode().strip()
        assert os.path.isabs(path) and path.endswith("libcalltrace.so") and os.path.isfile(path), path
        _LIB.append(path)
    return _LIB[0]


def _cli_env(env: dict | None) -> dict:
    return clean_env(**(env or {}))


def run_cli(*args: str, cwd: str | os.PathLike | None = None, env: dict | None = None,
            input: bytes | None = None, timeout: float = 120, check: bool = False
            ) -> subprocess.CompletedProcess:
    """Run the installed CLI as a user would: `python -m calltrace ARGS`.

    `cwd` defaults to a scratch folder outside the source tree, so the
    installed package is used, never the checkout."""
    full_env = _cli_env(env)
    if cwd is None:
        cwd = ROOT / "build" / "cli-cwd"
        Path(cwd).mkdir(parents=True, exist_ok=True)
    proc = subprocess.run([sys.executable, "-m", "calltrace", *map(str, args)], cwd=cwd,
                          env=full_env, input=input, capture_output=True, timeout=timeout)
    if check and proc.returncode != 0:
        raise AssertionError(f"calltrace {' '.join(map(str, args))} exited {proc.returncode}:\n"
                             f"{proc.stderr.decode(errors='replace')}")
    return proc


@contextlib.contextmanager
def cli_process(*args, cwd=None, env: dict | None = None, **popen):
    """The installed CLI started in a session of its own (`popen`: Popen's
    stdin/stdout/stderr...), killed with all it started when the test
    leaves the block, however it leaves: no run outlives its test."""
    if cwd is None:
        cwd = ROOT / "build" / "cli-cwd"
        Path(cwd).mkdir(parents=True, exist_ok=True)
    proc = subprocess.Popen([sys.executable, "-m", "calltrace", *map(str, args)], cwd=cwd,
                            env=env if env is not None else _cli_env(None), start_new_session=True, **popen)
    try:
        yield proc
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        for f in (proc.stdin, proc.stdout, proc.stderr):
            if f:
                f.close()


def run_cli_or_kill(*args, cwd, timeout: float) -> subprocess.CompletedProcess:
    """run_cli for a run that might hang: in a session of its own, so that
    calltrace, the program and its children are killed together after
    `timeout` seconds, and the test fails."""
    proc = subprocess.Popen([sys.executable, "-m", "calltrace", *map(str, args)], cwd=cwd, env=_cli_env(None),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True)
    try:
        stdout, stderr = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
        pytest.fail(f"calltrace {' '.join(map(str, args))} never ended")
    return subprocess.CompletedProcess(proc.args, proc.returncode, stdout, stderr)


def validate(doc: dict) -> dict:
    """Assert `doc` follows calltrace/trace/schema.json and the flat-list rules
    of docs/FORMAT.md that a schema cannot express."""
    errors = sorted(_validator.iter_errors(doc), key=lambda e: list(e.path))
    assert not errors, "schema: " + "; ".join(f"{list(e.path)}: {e.message}" for e in errors[:5])
    total = 0
    names = {f["function"] for f in doc["functions"]}
    for t in doc["threads"]:
        stack: list[dict] = []
        for c in t["calls"]:
            assert c["function"] in names, c["function"]
            while stack and stack[-1]["depth"] >= c["depth"]:
                stack.pop()
            assert c["depth"] == len(stack), f"depth jumps at {c}"
            if stack:
                p = stack[-1]
                assert p["start_ns"] <= c["start_ns"], (p, c)
                assert c["start_ns"] + c["duration_ns"] <= p["start_ns"] + p["duration_ns"], (p, c)
            stack.append(c)
        total += len(t["calls"])
    assert doc["metadata"]["total_calls"] == total
    assert doc["metadata"]["thread_count"] == len(doc["threads"])
    return doc


def validate_footer(doc: dict) -> dict:
    """Assert a Parquet trace's footer document follows
    calltrace/trace/footer.schema.json and indexes its own lists."""
    errors = sorted(_footer_validator.iter_errors(doc), key=lambda e: list(e.path))
    assert not errors, "footer schema: " + "; ".join(f"{list(e.path)}: {e.message}" for e in errors[:5])
    index, threads = doc["index"], doc["threads"]
    names = index["names"]
    if index["threads"] is not None:
        assert len(index["threads"]) == len(threads)
        for table, t in zip(index["threads"], threads):
            assert all(row[0] < len(names) for row in table)
            assert sum(row[1] for row in table) == t["calls"]
    for _, _, thread, row, path, _ in index["slowest"]["calls"]:
        assert row < threads[thread]["calls"] and all(f < len(names) for f in path)
    assert sum(t["calls"] for t in threads) == doc["metadata"]["total_calls"]
    return doc


def load_json(path: str | os.PathLike) -> dict:
    with open(path) as f:
        return json.load(f)


def shape(calls: list[dict]) -> list[tuple[int, str]]:
    """(depth, function) per call: the part of a trace that never varies."""
    return [(c["depth"], c["function"]) for c in calls]
