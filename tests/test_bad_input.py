"""Bad input to the commands that read traces and to attach/debug: one line
and status 2, never a traceback nor "internal error" (status 70, a bug).
Ctrl-C in a query and a standard output that cannot be written end as
they do in every command."""
from __future__ import annotations

import fcntl
import os
import signal
import subprocess
import sys
import time

import pytest

import calltrace
from conftest import clean_env, cli_process, fixture, run_cli

PID_MAX = 2**31 - 1     # pid_t's largest


@pytest.fixture(scope="module")
def traces(tmp_path_factory):
    """Two recordings of one program, for diff."""
    d = tmp_path_factory.mktemp("bad-input")
    for name in ("a", "b"):
        run_cli("run", "-q", "-o", d / f"{name}.json", fixture("recursion"), check=True)
    return str(d / "a.json"), str(d / "b.json")


def one_line(proc) -> str:
    """stderr, which must be a single `calltrace: error:` line."""
    err = proc.stderr.decode()
    assert err.count("\n") == 1 and err.startswith("calltrace: error: "), err
    assert "Traceback" not in err and "internal error" not in err, err
    return err.rstrip("\n")


def usage_error(proc) -> str:
    """argparse's answer: the usage, then the error line, status 2."""
    err = proc.stderr.decode()
    assert proc.returncode == 2 and err.startswith("usage: calltrace "), err
    assert "Traceback" not in err and "internal error" not in err, err
    return err.splitlines()[-1]


@pytest.mark.parametrize("query", ["", ";", "  ", "-- nothing but a comment"])
def test_sql_empty_query(traces, query):
    p = run_cli("sql", traces[0], query)
    assert (p.returncode, p.stdout) == (2, b"")
    assert one_line(p) == "calltrace: error: the query has no SQL statement in it"


def _long_query(trace, tmp_path, sig: int) -> tuple[subprocess.Popen, bytes, bytes]:
    """`sql` over `trace` (TMPDIR: tmp_path/tmp) sent `sig` once its query
    runs: the COPY says it does (the JSON trace is converted before); the
    cross join would then take hours."""
    started, scratch = tmp_path / "started.csv", tmp_path / "tmp"
    scratch.mkdir()
    query = (f"COPY (SELECT 1) TO '{started}'; "
             "SELECT sum(a.range * b.range) FROM range(1000000000) a, range(1000000000) b")
    with cli_process("sql", trace, query, env=clean_env(TMPDIR=str(scratch)),
                     stdout=subprocess.PIPE, stderr=subprocess.PIPE) as proc:
        deadline = time.monotonic() + 60
        while not started.exists():
            assert proc.poll() is None, proc.stderr.read()
            assert time.monotonic() < deadline, "the query never started"
            time.sleep(0.05)
        os.kill(proc.pid, sig)
        try:
            out, err = proc.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            pytest.fail(f"signal {sig} did not stop the query")
    return proc, out, err


def test_sql_ctrl_c(traces, tmp_path):
    """DuckDB turns SIGINT into its own error; calltrace still ends as on
    any Ctrl-C: status 130, nothing said, its scratch folder removed."""
    proc, out, err = _long_query(traces[0], tmp_path, signal.SIGINT)
    assert (proc.returncode, out, err) == (130, b"", b"")
    assert os.listdir(tmp_path / "tmp") == []


def test_sql_killed_leaves_its_scratch_to_the_next(traces, tmp_path):
    """SIGTERM ends `sql` inside DuckDB (its default action, as the query
    would not see a Python handler until it ends): the JSON trace converted
    into its scratch folder stays. The next `sql` removes it, and leaves the
    folder of one still running (its lock held) alone."""
    proc, _, _ = _long_query(traces[0], tmp_path, signal.SIGTERM)
    scratch = tmp_path / "tmp"
    env = clean_env(TMPDIR=str(scratch))
    assert proc.returncode == -signal.SIGTERM
    (left,) = os.listdir(scratch)
    assert sorted(os.listdir(scratch / left)) == ["0.parquet", "lock"]
    alive = scratch / "calltrace-sql-alive"
    alive.mkdir()
    with open(alive / "lock", "w") as held:
        fcntl.flock(held, fcntl.LOCK_EX)
        p = run_cli("sql", "--csv", traces[0], "SELECT count(*) AS n FROM calls", env=env)
        assert p.returncode == 0 and p.stdout.startswith(b"n\n"), p.stderr
        assert os.listdir(scratch) == ["calltrace-sql-alive"]


def _to(stdout, args, unbuffered: bool, cwd) -> subprocess.CompletedProcess:
    """The CLI writing into `stdout`, with Python's stdout buffered (the
    error then comes at the last flush) or not (at the first write)."""
    env = clean_env()
    env.pop("PYTHONUNBUFFERED", None)
    if unbuffered:
        env["PYTHONUNBUFFERED"] = "1"
    return subprocess.run([sys.executable, "-m", "calltrace", *map(str, args)], cwd=cwd, env=env,
                          stdout=stdout, stderr=subprocess.PIPE, timeout=120)


WRITERS = [["lib"], ["info", "A"], ["report", "A"], ["report", "--slowest", "3", "A"], ["replay", "A"],
           ["sql", "A", "SELECT * FROM calls"], ["sql", "--csv", "A", "SELECT * FROM calls"],
           ["sql", "--json", "A", "SELECT * FROM calls"], ["diff", "A", "B"],
           ["export", "-f", "folded", "-o", "-", "A"], ["export", "-f", "parquet", "-o", "-", "A"]]


@pytest.mark.parametrize("unbuffered", [False, True], ids=["buffered", "unbuffered"])
@pytest.mark.parametrize("args", WRITERS, ids=" ".join)
def test_stdout_full(traces, tmp_path, args, unbuffered):
    args = [{"A": traces[0], "B": traces[1]}.get(a, a) for a in args]
    with open("/dev/full", "w") as full:
        p = _to(full, args, unbuffered, tmp_path)
    assert p.returncode == 2
    assert one_line(p) == "calltrace: error: cannot write to standard output: No space left on device"


@pytest.mark.parametrize("unbuffered", [False, True], ids=["buffered", "unbuffered"])
@pytest.mark.parametrize("args", [["--help"], ["--version"], ["report", "--help"]], ids=" ".join)
def test_help_into_a_full_disk(tmp_path, args, unbuffered):
    """argparse drops a failed write of the help and exits 0: said here."""
    with open("/dev/full", "w") as full:
        p = _to(full, args, unbuffered, tmp_path)
    assert p.returncode == 2
    assert one_line(p) == "calltrace: error: cannot write to standard output: No space left on device"
    r, w = os.pipe()
    os.close(r)
    try:
        p = _to(w, args, unbuffered, tmp_path)      # into `head`, gone: quiet, as for the commands
    finally:
        os.close(w)
    assert (p.returncode, p.stderr) == (0, b"")


@pytest.mark.parametrize("unbuffered", [False, True], ids=["buffered", "unbuffered"])
@pytest.mark.parametrize("args", [["lib"], ["report", "A"], ["replay", "A"]], ids=" ".join)
def test_stdout_closed_pipe_is_quiet(traces, tmp_path, args, unbuffered):
    """Output into `head`, which has gone: status 0 and no message, as before."""
    args = [traces[0] if a == "A" else a for a in args]
    r, w = os.pipe()
    os.close(r)
    try:
        p = _to(w, args, unbuffered, tmp_path)
    finally:
        os.close(w)
    assert (p.returncode, p.stderr) == (0, b"")


@pytest.mark.parametrize("pid", [str(PID_MAX + 1), "4194304999", "99999999999999999999", "0", "-1", "abc"])
def test_bad_pid(tmp_path, pid):
    p = run_cli("attach", pid, cwd=tmp_path)
    assert usage_error(p) == f"calltrace attach: error: argument pid: '{pid}' is not a process id"
    p = run_cli("debug", "--pid", pid, cwd=tmp_path)
    assert usage_error(p) == f"calltrace debug: error: argument --pid: '{pid}' is not a process id"
    assert os.listdir(tmp_path) == []


def test_largest_pid_is_looked_up(tmp_path):
    """pid_t's largest passes the parser: then it is just no process."""
    p = run_cli("attach", str(PID_MAX), cwd=tmp_path)
    assert p.returncode == 1
    assert one_line(p) == f"calltrace: error: no process with pid {PID_MAX}"


@pytest.mark.parametrize("n", ["10000000000", "99999999999999999999"])
def test_slowest_more_than_the_calls(traces, n):
    total = calltrace.load(traces[0]).total_calls
    want = run_cli("report", "--slowest", str(total), traces[0], check=True)
    p = run_cli("report", "--slowest", n, traces[0])
    assert (p.returncode, p.stderr) == (0, b"")
    assert p.stdout == want.stdout
    lines = p.stdout.decode().splitlines()
    assert lines[2] == f"slowest {total} calls:" and len(lines) == 4 + total


@pytest.mark.parametrize("n", ["-1", "0"])
def test_diff_limit_below_one(traces, n):
    p = run_cli("diff", "-n", n, *traces)
    assert p.stdout == b""
    assert usage_error(p) == f"calltrace diff: error: argument -n/--limit: '{n}' must be 1 or more"


def test_diff_limit_one(traces):
    def words(*args):   # the columns are as wide as the rows shown
        out = run_cli("diff", "-a", *args, *traces, check=True).stdout.decode()
        return [line.split() for line in out.splitlines()]
    assert words("-n", "1") == words()[:5]     # 2 lines, a blank one, the table's header, 1 row


@pytest.mark.parametrize("value, shown", [("nan", "nan"), ("NaN", "nan"), ("inf", "inf"), ("1e400", "inf"),
                                          ("-inf", "-inf"), ("-1", "-1")])
def test_diff_fail_above_not_a_percentage(traces, value, shown):
    p = run_cli("diff", f"--fail-above={value}", *traces)
    assert (p.returncode, p.stdout) == (2, b"")
    assert one_line(p) == f"calltrace: error: --fail-above must be a finite number, 0 or more (not {shown})"


@pytest.mark.parametrize("name, hint", [("bogus", ""), ("reprot", "; did you mean 'report'?"),
                                        ("plann", "")])
def test_unknown_command_lists_the_public_ones(name, hint):
    """The internal commands (plan, filter: the runtime's) are not offered."""
    p = run_cli(name, "x")
    assert p.stdout == b""
    assert usage_error(p) == (f"calltrace: error: unknown command '{name}' (the commands: run, attach, "
                              f"debug, replay, report, diff, export, sql, info, convert, lib){hint}")


@pytest.mark.parametrize("width", ["-5", "0", "199"])
def test_export_width_below_the_smallest(traces, tmp_path, width):
    p = run_cli("export", "-f", "svg", "--width", width, "-o", tmp_path / "w.svg", traces[0])
    assert not (tmp_path / "w.svg").exists()
    assert usage_error(p) == f"calltrace export: error: argument --width: '{width}' must be 200 or more"


@pytest.mark.parametrize("duration", ["0", "0s", "0.0ms"])
def test_attach_duration_zero(duration):
    """No length of recording, and not "until Ctrl-C" either: refused
    before any process is looked at."""
    p = run_cli("attach", "--duration", duration, str(PID_MAX))
    assert usage_error(p) == (f"calltrace attach: error: argument --duration: '{duration}' must be more "
                              "than 0 (without --duration, the recording runs until Ctrl-C)")


@pytest.mark.parametrize("args", WRITERS, ids=" ".join)
def test_stdout_closed(traces, tmp_path, args):
    """fd 1 closed (`>&-`): the command's output has nowhere to go; one line
    and status 2, as for a full disk."""
    args = [{"A": traces[0], "B": traces[1]}.get(a, a) for a in args]
    p = subprocess.run(["sh", "-c", 'exec "$@" >&-', "sh", sys.executable, "-m", "calltrace", *map(str, args)],
                       cwd=tmp_path, env=clean_env(), stderr=subprocess.PIPE, timeout=120)
    assert p.returncode == 2
    assert one_line(p) == "calltrace: error: cannot write to standard output: it is closed"
