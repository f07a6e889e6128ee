"""calltrace replay: golden timelines, every filter, colour, bad input."""
from __future__ import annotations

import os
import pty
import subprocess

import pytest

from conftest import cli_process, fixture, run_cli
from postmortem_util import check_golden, cli_stdout, normalise_replay, read_until_closed, write, write_demo, leaf


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    return write_demo(tmp_path_factory.mktemp("replay") / "demo.json")


def replay(*args) -> str:
    return cli_stdout("replay", *args)


DEMO_REPLAY = """\
== thread 100 [main] ==
       0 ns    10.000 us  main
     100 ns       500 ns    parse(s="a,b") = 2
     700 ns       300 ns    parse(s="c") = 1
   1.500 us     7.500 us    compute
   2.000 us       900 ns      fib
   2.100 us       400 ns        fib
   2.150 us       100 ns          fib
   2.300 us       150 ns          fib
   2.550 us       250 ns        fib
   3.000 us     5.500 us      report

== thread 101 worker-1 ==
   1.000 us     5.000 us  work
   1.200 us     4.000 us    fib
"""


def test_replay_demo(demo):
    assert replay(demo) == DEMO_REPLAY


def body(text: str) -> list[str]:
    """(indented name) per call line, threads separated by '--'."""
    out = []
    for line in text.splitlines():
        if line.startswith("=="):
            out.append("--")
        elif line.strip():
            out.append(line if line.startswith("  (no calls") else line[26:])
    return out


@pytest.mark.parametrize("args, expected", [
    (["-F", "^fib$"], ["--", "fib", "  fib", "    fib", "    fib", "  fib", "--", "fib"]),
    (["-F", "fib", "-D", "2"], ["--", "fib", "  fib", "  fib", "--", "fib"]),
    (["-D", "2"], ["--", "main", '  parse(s="a,b") = 2', '  parse(s="c") = 1', "  compute", "--",
                   "work", "  fib"]),
    (["-N", "compute|work"], ["--", "main", '  parse(s="a,b") = 2', '  parse(s="c") = 1', "--",
                              "  (no calls shown)"]),
    (["-t", "400ns"], ["--", "main", '  parse(s="a,b") = 2', "  compute", "    fib", "      fib",
                       "    report", "--", "work", "  fib"]),
    (["-t", "1us", "--tid", "101"], ["--", "work", "  fib"]),
    (["--tid", "100", "--tid", "101", "-F", "report"], ["--", "report", "--", "  (no calls shown)"]),
    (["-F", "compute", "-N", "^fib"], ["--", "compute", "  report", "--", "  (no calls shown)"]),
])
def test_filters(demo, args, expected):
    assert body(replay(*args, demo)) == expected


def test_bad_arguments(demo):
    for args, message in [
        (["--tid", "7"], "no thread 7 in {demo} (threads: 100, 101)"),
        (["-F", "("], "-F '(' is not a valid regular expression: missing ), unterminated subpattern at position 0"),
        (["-D", "0"], "-D/--depth must be at least 1"),
    ]:
        p = run_cli("replay", *args, demo)
        assert (p.returncode, p.stdout) == (2, b"")
        assert p.stderr.decode() == "calltrace: error: " + message.format(demo=demo) + "\n"
    p = run_cli("replay", "-t", "fast", demo)
    assert p.returncode == 2 and b"bad duration 'fast'" in p.stderr and b"Traceback" not in p.stderr


def test_colour_only_on_a_terminal(demo):
    assert "\x1b[" not in replay(demo)                       # a pipe: never
    always = replay("--color", "always", demo)
    assert "\x1b[1m== thread 100 [main] ==\x1b[0m" in always
    assert "\x1b[36mmain\x1b[0m" in always
    # a real terminal: colour by default
    master, slave = pty.openpty()
    env = {k: v for k, v in os.environ.items() if k != "NO_COLOR"}
    env["TERM"] = "xterm"
    with cli_process("replay", demo, stdout=slave, stderr=subprocess.PIPE, env=env, cwd="/") as proc:
        os.close(slave)
        out = read_until_closed(master).decode()
        assert proc.wait(timeout=60) == 0
    os.close(master)
    assert "\x1b[1m== thread 100 [main] ==\x1b[0m" in out
    assert "\x1b[36mwork\x1b[0m" in out


def test_incomplete_and_unwound_marks(tmp_path):
    path = write(tmp_path / "i.json", [(1, None, [("main", 0, None, [leaf("g", 5, 8), ("crash", 10, None, [])])])],
                 end_ns=50)
    assert body(replay(path)) == ["--", "main [incomplete]", "  g", "  crash [incomplete]"]


@pytest.fixture(scope="module")
def recorded(tmp_path_factory):
    d = tmp_path_factory.mktemp("recorded")
    out = {}
    for name, args in [("recursion", []), ("workers", []), ("names", []), ("die", ["exit"])]:
        path = d / f"{name}.json"
        p = run_cli("run", "-q", "-o", path, fixture(name), *args)
        assert p.returncode == (3 if name == "die" else 0), p.stderr.decode()
        out[name] = str(path)
    return out


@pytest.mark.parametrize("name, args", [("recursion", []), ("workers", []), ("names", []),
                                        ("die", []), ("recursion", ["-F", "apply"]),
                                        ("workers", ["-N", "^work$"])])
def test_golden_fixture(recorded, name, args):
    text = normalise_replay(replay(*args, recorded[name]), sort_threads=(name == "workers"))
    suffix = "".join(a.strip("-^$") for a in args)
    check_golden(f"replay-{name}{'-' + suffix if suffix else ''}.txt", text)


def test_truncated_trace_shows_what_it_could_read(recorded, tmp_path):
    data = open(recorded["recursion"], "rb").read()
    cut = tmp_path / "cut.json"
    cut.write_bytes(data[:data.index(b'"function":"apply","depth":1') + 5])
    p = run_cli("replay", cut)
    assert p.returncode == 0
    assert p.stderr.decode() == (f"calltrace: warning: {cut}: truncated trace: showing the calls "
                                 "before the cut (the function table is complete)\n")
    names = [line.strip() for line in body(p.stdout.decode())]
    assert names == ["--", "main"] + ["fib"] * 15


@pytest.mark.parametrize("content, message", [
    (None, "no such file"), ("", "empty file, not a calltrace trace"),
    ("{\"a\": 1", "truncated trace (ends after 7 bytes)"),
    ("<html>", "not JSON (JSONDecodeError: Expecting value: line 1 column 1 (char 0))"),
    ('{"format": "calltrace", "version": 1}', "malformed trace (missing or wrong field 'threads')"),
])
def test_bad_input_one_line(tmp_path, content, message):
    path = tmp_path / "x.json"
    if content is not None:
        path.write_text(content)
    for cmd in (["replay"], ["report"], ["report", "--threads"], ["info"], ["export", "-f", "html"],
                ["diff", str(path)]):
        p = run_cli(*cmd, path)
        assert (p.returncode, p.stdout) == (2, b""), cmd
        assert p.stderr.decode() == f"calltrace: error: {path}: {message}\n", cmd


def test_golden_captured_values_from_both_backends(tmp_path):
    """Arguments recorded by the runtime (run --capture-args) and arguments
    plus return values recorded by the GDB backend, rendered C-like."""
    import re
    run_trace = tmp_path / "args.json"
    p = run_cli("run", "-q", "--capture-args", "-o", run_trace, fixture("argtypes"))
    assert p.returncode == 0, p.stderr.decode()
    gdb_trace = tmp_path / "gdb.json"
    p = run_cli("debug", "-q", "--capture-args", "--capture-returns", "-o", gdb_trace, fixture("recursion"),
                timeout=600)
    assert p.returncode == 0, p.stderr.decode()
    for name, path in (("replay-argtypes-run.txt", run_trace), ("replay-recursion-debug.txt", gdb_trace)):
        text = re.sub(r"0x[0-9a-f]{6,}", "0x<addr>", normalise_replay(replay(path)))
        check_golden(name, text)


def test_value_rendering():
    from calltrace.analysis.render import fmt_call
    args = [{"name": "a", "type": "int", "value": None, "note": "optimized out"},
            {"name": "s", "type": "char *", "value": "abc", "note": "truncated"},
            {"name": "p", "type": "char *", "value": "0x10", "note": "invalid pointer"},
            {"name": "c", "type": "unsigned char", "value": "\x01"},
            {"name": "d", "type": "double", "value": "nan"},
            {"name": "q", "type": "struct q", "value": {"in": {"v": "nan", "s": "x y"}, "l": [1, 2]}},
            {"type": "int", "value": 3}]
    assert fmt_call("f", {"args": args, "return": {"type": "_Bool", "value": False}, "unwound": True}) == (
        'f(a=<optimized out>, s="abc"..., p=0x10 <invalid pointer>, c=\'\\x01\', d=nan, '
        'q={in={v=nan, s="x y"}, l=[1, 2]}, 3) = false [unwound]')
    assert fmt_call("g", None) == "g" and fmt_call("g", {"args": []}) == "g()"
