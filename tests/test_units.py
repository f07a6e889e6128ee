"""One reading of a duration: calltrace/units.py and the runtime's
CALLTRACE_THRESHOLD parser (runtime/config.c) agree on every case of
tests/data/durations.txt; run and replay take the same -t."""
from __future__ import annotations

import subprocess

import pytest

from calltrace.errors import CalltraceError
from calltrace.units import count, fmt_ns, parse_duration, plural
from conftest import ROOT, fixture, load_json, run_cli

HARNESS = r"""
#include "config.c"
uint32_t ct_max_depth;
/* config.c's neighbours (attach.c), not under test here */
const char *ct_env(const char *name) { return getenv(name); }
int ct_attach_late(void) { return 0; }
int main(void) {
    char line[256];
    while (fgets(line, sizeof line, stdin)) {
        line[strcspn(line, "\n")] = 0;
        long long ns = parse_duration(line);
        if (ns < 0)
            puts("error");
        else
            printf("%lld\n", ns);
    }
    return 0;
}
"""


def cases() -> list[tuple[str, str]]:
    out = []
    for line in (ROOT / "tests" / "data" / "durations.txt").read_text(encoding="utf-8").splitlines():
        if line.startswith("|"):
            text, expected = line[1:].rsplit("|", 1)
            out.append((text, expected.strip()))
    return out


def python_reading(text: str) -> str:
    try:
        return str(parse_duration(text))
    except CalltraceError:
        return "error"


def test_table_is_read_whole():
    assert len(cases()) == 48


@pytest.mark.parametrize("text,expected", cases())
def test_python_parser(text, expected):
    assert python_reading(text) == expected


def test_runtime_parser(tmp_path):
    src = tmp_path / "harness.c"
    src.write_text(HARNESS)
    exe = tmp_path / "harness"
    subprocess.run(["gcc", "-O1", "-I", str(ROOT / "runtime"), str(src), "-o", str(exe)], check=True,
                   timeout=120)
    table = cases()
    out = subprocess.run([str(exe)], input="".join(t + "\n" for t, _ in table).encode(),
                         capture_output=True, timeout=60, check=True).stdout.decode().splitlines()
    assert list(zip([t for t, _ in table], out)) == [(t, e) for t, e in table]


def test_runtime_environment_threshold(tmp_path):
    """CALLTRACE_THRESHOLD as the preloaded runtime reads it."""
    out = tmp_path / "t.json"
    proc = run_cli("run", "-q", "-o", out, fixture("recursion"), cwd=tmp_path,
                   env={"CALLTRACE_THRESHOLD": " 2.5µs "})
    assert proc.returncode == 0, proc.stderr
    assert load_json(out)["metadata"]["options"]["threshold_ns"] == 2500


@pytest.mark.parametrize("command", ["run", "replay"])
def test_micro_sign_in_both_commands(tmp_path, command):
    out = tmp_path / "t.json"
    run_cli("run", "-q", "-o", out, fixture("recursion"), cwd=tmp_path, check=True)
    if command == "run":
        proc = run_cli("run", "-q", "-t", "10µs", "-o", out, fixture("recursion"), cwd=tmp_path)
        assert proc.returncode == 0, proc.stderr
        assert load_json(out)["metadata"]["options"]["threshold_ns"] == 10000
    else:
        proc = run_cli("replay", "-t", "10µs", out, cwd=tmp_path)
        assert proc.returncode == 0, proc.stderr


def test_one_formatter():
    assert [fmt_ns(v) for v in (0, 950, 12345, 1_500_000, 2_000_000_000)] == [
        "0 ns", "950 ns", "12.345 us", "1.500 ms", "2.000 s"]
    assert (count(1234567), plural(1, "thread"), plural(2, "thread"), plural(1000, "call")) == (
        "1,234,567", "1 thread", "2 threads", "1,000 calls")
