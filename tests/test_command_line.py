"""The command line of the launching commands: what after the program path
is calltrace's and what is the program's; errors that come before the
program runs; the wording of summaries; what `--help` shows."""
from __future__ import annotations

import os

import pytest

from conftest import ROOT, fixture, load_json, preload_env, require_tool, run_cli


def test_program_options_that_look_like_ours_reach_the_program(tmp_path):
    """`calltrace run zstd --force --quiet f -o o.zst`: every option is the
    program's; one line says which of them calltrace also has."""
    out = tmp_path / "t.json"
    proc = run_cli("run", "-q", "-o", out, fixture("echo"), "--force", "--quiet", "f", "-o", "o.zst",
                   "--help", cwd=tmp_path)
    assert proc.returncode == 6
    assert proc.stdout.decode().splitlines() == [
        "arg: --force", "arg: --quiet", "arg: f", "arg: -o", "arg: o.zst", "arg: --help"]
    notes = [l for l in proc.stderr.decode().splitlines() if l.startswith("calltrace:")]
    assert notes == [f"calltrace: note: --force --quiet -o --help after the program path went to echo; "
                     f"to give them to calltrace, put them before {fixture('echo')}"]
    assert not (tmp_path / "o.zst").exists() and out.exists()


def test_recording_options_may_follow_the_program(tmp_path):
    out = tmp_path / "t.json"
    proc = run_cli("run", "-o", out, fixture("echo"), "--max-depth", "1", "x", "--only=main", "--", "--max-depth",
                   cwd=tmp_path)
    assert proc.returncode == 2
    assert proc.stdout.decode().splitlines() == ["arg: x", "arg: --max-depth"]
    assert "note:" not in proc.stderr.decode()
    md = load_json(out)["metadata"]
    assert md["options"]["max_depth"] == 1 and md["options"]["only"] == "main"


def test_debug_keeps_capture_args_after_the_program(tmp_path):
    require_tool("gdb", "gdb")
    out = tmp_path / "t.json"
    proc = run_cli("debug", "-q", "-o", out, fixture("recursion"), "--capture-args", "--only", "square",
                   "--quiet", cwd=tmp_path, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert "--quiet after the program path went to recursion" in proc.stderr.decode()
    calls = load_json(out)["threads"][0]["calls"]
    assert [(c["function"], c["args"][0]["value"]) for c in calls] == [("square", 5), ("square", 1)]


@pytest.mark.parametrize("command", ["run", "debug"])
def test_help_states_the_rule(command):
    text = " ".join(run_cli(command, "--help", check=True).stdout.decode().split())
    assert ("Options after PROGRAM are the program's, except calltrace's long options that choose what "
            "to record (--capture-args, ") in text
    assert "everything after -- is the program's." in text


def test_unknown_option_prints_the_commands_usage(tmp_path):
    proc = run_cli("run", "--bogus", fixture("recursion"), cwd=tmp_path)
    err = proc.stderr.decode()
    assert proc.returncode == 2
    assert err.startswith("usage: calltrace run ") and "calltrace run: error: unrecognized arguments: --bogus" in err
    assert os.listdir(tmp_path) == []


@pytest.mark.parametrize("command", ["run", "debug"])
def test_output_folder_refused_before_running(tmp_path, command):
    (tmp_path / "dir").mkdir()
    proc = run_cli(command, "-o", tmp_path / "dir", fixture("echo"), "ran", cwd=tmp_path)
    assert proc.returncode == 2 and proc.stdout == b""
    assert proc.stderr.decode() == (f"calltrace: error: cannot write {tmp_path / 'dir'}: it is a folder; give a "
                                    f"file name (e.g. {tmp_path / 'dir' / 'calltrace.json'})\n")


def test_not_instrumented_names_the_debug_way(tmp_path):
    proc = run_cli("run", "/bin/true", cwd=tmp_path)
    assert proc.returncode == 2 and "calltrace debug --uninstrumented" in proc.stderr.decode()


def test_one_thread_is_singular(tmp_path):
    proc = run_cli("run", "-o", tmp_path / "t.json", fixture("recursion"), cwd=tmp_path, check=True)
    assert "calltrace: 21 calls, 1 thread, " in proc.stderr.decode()


def test_convert_summary_is_singular(tmp_path):
    import subprocess
    raw = tmp_path / "raw"
    raw.mkdir()
    env = preload_env(CALLTRACE_RAW_DIR=str(raw), CALLTRACE_OUTPUT=str(tmp_path / "t.json"))
    subprocess.run([fixture("recursion")], env=env, capture_output=True, timeout=60, check=True)
    [stream] = list(raw.glob("*.raw"))
    proc = run_cli("convert", stream, "-o", tmp_path / "c.json", cwd=tmp_path, check=True)
    assert proc.stderr.decode() == f"calltrace: 21 calls, 1 thread: trace written to {tmp_path / 'c.json'}\n"


def test_internal_commands_are_hidden():
    text = run_cli("--help", check=True).stdout.decode()
    listed = [line.split()[0] for line in text.split("positional arguments:")[1].split("options:")[0].splitlines()[2:]
              if line.startswith("    ") and not line.startswith("     ")]
    assert listed == ["run", "attach", "debug", "replay", "report", "diff", "export", "sql", "info", "convert", "lib"]
    assert "--from-runtime" not in run_cli("convert", "--help", check=True).stdout.decode()


def test_info_separates_thousands(tmp_path):
    out = tmp_path / "t.json"
    run_cli("run", "-q", "-o", out, fixture("deep"), cwd=tmp_path, check=True)
    lines = run_cli("info", out, check=True).stdout.decode().splitlines()
    calls = load_json(out)["metadata"]["total_calls"]
    assert calls >= 1000 and f"calls:               {calls:,}" in lines


def test_make_demo_shows_what_it_runs():
    """Every `$ command` the demo prints is the command it runs next."""
    text = (ROOT / "Makefile").read_text()
    demo = text.split("\ndemo:", 1)[1].split("\n\n", 1)[0].splitlines()
    for i, line in enumerate(demo):
        if "echo '$$ " in line:
            shown, rest = line.split("echo '$$ ", 1)[1].split("'", 1) if "python3" not in line else (
                "python3", "")
            rest = rest.strip().lstrip(";").strip().rstrip("\\").strip()
            runs = rest or demo[i + 1].strip().lstrip("@")
            word = shown.split()[0]
            assert runs.split()[0] in (word, "$(VENV)/bin/" + word) or (
                word == "python3" and runs.startswith("$(PY) -c")), (line, runs)
