"""Bad input gets one clear line and a documented status, never a traceback."""
from __future__ import annotations

import os
import signal
import stat

import pytest

from conftest import fixture, run_cli


def one_error_line(proc) -> str:
    err = proc.stderr.decode()
    assert "Traceback" not in err
    lines = [l for l in err.splitlines() if l.startswith("calltrace: error:")]
    assert len(lines) == 1, err
    return lines[0]


def test_missing_program(tmp_path):
    proc = run_cli("run", "./nope", cwd=tmp_path)
    assert proc.returncode == 127
    assert one_error_line(proc) == "calltrace: error: ./nope: no such file"


def test_program_not_on_path(tmp_path):
    proc = run_cli("run", "no-such-program-xyz", cwd=tmp_path)
    assert proc.returncode == 127 and "not on $PATH" in one_error_line(proc)


def test_not_executable(tmp_path):
    f = tmp_path / "data.txt"
    f.write_text("hi")
    proc = run_cli("run", str(f), cwd=tmp_path)
    assert proc.returncode == 126 and "not executable" in one_error_line(proc)


def test_directory(tmp_path):
    proc = run_cli("run", str(tmp_path), cwd=tmp_path)
    assert proc.returncode == 126 and "is a directory" in one_error_line(proc)


def test_not_instrumented(tmp_path):
    proc = run_cli("run", "/bin/true", cwd=tmp_path)
    assert proc.returncode == 2
    line = one_error_line(proc)
    assert "not built with -finstrument-functions" in line and "gcc -g -finstrument-functions" in line
    assert os.listdir(tmp_path) == []


def test_static_program(tmp_path):
    import subprocess
    from conftest import ROOT
    exe = tmp_path / "static"
    subprocess.run(["gcc", "-static", "-g", "-finstrument-functions", str(ROOT / "fixtures" / "recursion.c"),
                    "-o", str(exe)], check=True)
    proc = run_cli("run", str(exe), cwd=tmp_path)
    assert proc.returncode == 2 and "statically linked" in one_error_line(proc)


def test_output_folder_missing(tmp_path):
    proc = run_cli("run", "-o", str(tmp_path / "no" / "t.json"), fixture("recursion"), cwd=tmp_path)
    assert proc.returncode == 2 and "does not exist" in one_error_line(proc)


def test_output_folder_not_writable(tmp_path):
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(stat.S_IRUSR | stat.S_IXUSR)
    try:
        if os.geteuid() == 0:
            # root writes anywhere: use a path under /proc instead
            proc = run_cli("run", "-o", "/proc/t.json", fixture("recursion"), cwd=tmp_path)
        else:
            proc = run_cli("run", "-o", str(ro / "t.json"), fixture("recursion"), cwd=tmp_path)
    finally:
        ro.chmod(stat.S_IRWXU)
    assert proc.returncode == 2 and "cannot write" in one_error_line(proc)


def test_output_is_symlink(tmp_path):
    (tmp_path / "target").write_text("keep me")
    (tmp_path / "t.json").symlink_to(tmp_path / "target")
    proc = run_cli("run", "-o", str(tmp_path / "t.json"), fixture("recursion"), cwd=tmp_path)
    assert proc.returncode == 2 and "symbolic link" in one_error_line(proc)
    assert (tmp_path / "target").read_text() == "keep me"


def test_no_program(tmp_path):
    proc = run_cli("run", cwd=tmp_path)
    assert proc.returncode == 2 and b"no program given" in proc.stderr and b"Traceback" not in proc.stderr


def test_bad_max_depth_option(tmp_path):
    proc = run_cli("run", "--max-depth", "abc", fixture("recursion"), cwd=tmp_path)
    assert proc.returncode == 2 and b"'abc' is not a whole number" in proc.stderr


def test_convert_foreign_file(tmp_path):
    f = tmp_path / "x.raw"
    f.write_bytes(b"hello world" * 100)
    proc = run_cli("convert", str(f), cwd=tmp_path)
    assert proc.returncode == 2
    assert one_error_line(proc) == f"calltrace: error: {f}: not a raw calltrace stream"


def test_convert_missing_file(tmp_path):
    proc = run_cli("convert", str(tmp_path / "none.raw"), cwd=tmp_path)
    assert proc.returncode == 2 and "cannot read" in one_error_line(proc)


# --- the audit of 2026-11-27: what calltrace deletes or overwrites ----------

def test_run_refuses_a_raw_folder_holding_other_files(tmp_path):
    """OUT.raw/ with files calltrace did not write is in the way, as a file
    there is: never deleted."""
    (tmp_path / "c.json.raw").mkdir()
    (tmp_path / "c.json.raw" / "notes.txt").write_text("mine")
    proc = run_cli("run", "-q", "-o", "c.json", fixture("recursion"), cwd=tmp_path)
    assert proc.returncode == 2
    assert one_error_line(proc) == (
        "calltrace: error: c.json.raw is in the way: calltrace keeps the raw data of a run there, and it "
        "holds files calltrace did not write (notes.txt); move it away")
    assert (tmp_path / "c.json.raw" / "notes.txt").read_text() == "mine"
    assert sorted(os.listdir(tmp_path / "c.json.raw")) == ["lock", "notes.txt"]


def test_convert_folder_deletes_only_a_runs_streams(tmp_path):
    """A folder of streams that is not a run's raw folder keeps everything;
    a run's keeps what calltrace did not put there."""
    import shutil
    import subprocess
    from conftest import lib
    env = {k: v for k, v in os.environ.items() if not k.startswith("CALLTRACE_")}
    plain = tmp_path / "plain"
    plain.mkdir()
    subprocess.run([fixture("recursion")], cwd=plain, timeout=60, check=True, stdout=subprocess.DEVNULL,
                   env={**env, "LD_PRELOAD": lib(), "CALLTRACE_RAW_DIR": str(plain)})
    (raw,) = [n for n in os.listdir(plain) if n.endswith(".raw")]
    (plain / "notes.txt").write_text("mine")
    proc = run_cli("convert", "-q", plain, "-o", tmp_path / "p.json", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert sorted(os.listdir(plain)) == sorted(["notes.txt", raw])
    assert run_cli("info", tmp_path / "p.json").returncode == 0
    # A run's raw folder, stopped before converting, with a file of ours in it.
    run_dir = tmp_path / "r.json.raw"
    shutil.copytree(plain, run_dir)
    (run_dir / "run.json").write_text('{"pid": %d, "output": "%s"}' % (int(raw[:-4]), tmp_path / "r.json"))
    proc = run_cli("convert", "-q", run_dir, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert os.listdir(run_dir) == ["notes.txt"] and (tmp_path / "r.json").exists()


def test_convert_truncated_trace_says_so_in_the_copy(tmp_path):
    """A trace cut short converts as far as it goes: a warning, and a note in
    the copy, which has no cut of its own to show it."""
    import json
    import pyarrow.parquet as pq
    run_cli("run", "-q", "-o", tmp_path / "t.json", fixture("recursion"), check=True)
    data = (tmp_path / "t.json").read_bytes()
    cut = tmp_path / "cut.json"
    cut.write_bytes(data[:data.index(b'"function":"square"', data.index(b'"threads"'))])
    for out in ("c.json", "c.parquet"):
        proc = run_cli("convert", cut, "-o", tmp_path / out, cwd=tmp_path)
        assert proc.returncode == 0
        assert proc.stderr.decode().splitlines() == [
            f"calltrace: warning: {cut}: truncated trace: showing the calls before the cut (the function "
            "table is complete)",
            f"calltrace: the calls before the cut, 1 thread: trace written to {tmp_path / out}"]
    note = ("copied from a truncated trace (cut.json): only the calls before the cut are here; total_calls "
            "and the functions table describe the whole recording")
    assert json.loads((tmp_path / "c.json").read_text())["metadata"]["notes"] == [note]
    footer = json.loads(pq.ParquetFile(tmp_path / "c.parquet").metadata.metadata[b"calltrace"])
    assert footer["metadata"]["notes"] == [note]
    assert run_cli("export", "-f", "parquet", cut, "-o", tmp_path / "e.parquet").returncode == 0
    footer = json.loads(pq.ParquetFile(tmp_path / "e.parquet").metadata.metadata[b"calltrace"])
    assert footer["metadata"]["notes"] == [note]


def test_raw_input_to_post_mortem_says_convert(tmp_path):
    import subprocess
    from conftest import lib
    env = {k: v for k, v in os.environ.items() if not k.startswith("CALLTRACE_")}
    subprocess.run([fixture("recursion")], cwd=tmp_path, timeout=60, check=True, stdout=subprocess.DEVNULL,
                   env={**env, "LD_PRELOAD": lib(), "CALLTRACE_RAW_DIR": str(tmp_path)})
    (raw,) = [n for n in os.listdir(tmp_path) if n.endswith(".raw")]
    for cmd in ("info", "report", "replay"):
        proc = run_cli(cmd, raw, cwd=tmp_path)
        assert proc.returncode == 2
        assert one_error_line(proc) == (f"calltrace: error: {raw}: a raw stream, not a trace yet: convert it "
                                        f"with `calltrace convert {raw}`")
        proc = run_cli(cmd, ".", cwd=tmp_path)
        assert proc.returncode == 2
        assert one_error_line(proc) == ("calltrace: error: .: a folder of raw streams, not a trace yet: "
                                        "convert it with `calltrace convert .`")


def test_the_same_trace_twice_is_not_two_parts(tmp_path):
    run_cli("run", "-q", "-o", tmp_path / "t.json", fixture("recursion"), check=True)
    (tmp_path / "copy.json").write_bytes((tmp_path / "t.json").read_bytes())
    for second in ("t.json", "copy.json"):
        proc = run_cli("report", "t.json", second, cwd=tmp_path)
        assert proc.returncode == 2
        assert one_error_line(proc) == (f"calltrace: error: t.json and {second} are one trace, not parts of a "
                                        "rolling run: give each part once, or read them one at a time")


def test_shared_library_is_not_a_program(tmp_path):
    lib = fixture("libplugin.so")
    for cmd in (("run",), ("debug",)):
        proc = run_cli(*cmd, lib, cwd=tmp_path)
        assert proc.returncode == 2
        assert one_error_line(proc).startswith(f"calltrace: error: {lib} is a shared library, not a program: ")


def test_dataset_folder_not_writable_refused_before_the_run(tmp_path):
    """Checked inside the folder before the program starts, as a trace's
    folder is (root writes anywhere but into an immutable folder)."""
    import shutil
    import subprocess
    folder = tmp_path / "ro"
    folder.mkdir()
    root = os.geteuid() == 0
    if root and not shutil.which("chattr"):
        return
    if root:
        subprocess.run(["chattr", "+i", str(folder)], check=True, timeout=30)
    else:
        folder.chmod(0o555)
    try:
        proc = run_cli("run", "-q", "-o", f"{folder}/", fixture("recursion"), cwd=tmp_path)
    finally:
        if root:
            subprocess.run(["chattr", "-i", str(folder)], check=True, timeout=30)
        folder.chmod(0o755)
    assert proc.returncode == 2
    assert one_error_line(proc).startswith(f"calltrace: error: cannot write {folder}/: ")
    assert proc.stdout == b"" and os.listdir(folder) == []      # the program did not run


def test_names_that_are_not_utf8(tmp_path):
    """Linux names are bytes: a program and a trace whose names are not
    UTF-8 are read by their bytes and shown with \\xNN."""
    import json
    import shutil
    prog = os.fsdecode(bytes(tmp_path) + b"/prog\xff")
    shutil.copy(fixture("recursion"), prog)
    out = os.fsdecode(bytes(tmp_path) + b"/t\xfe.parquet")
    assert run_cli("run", "-q", "-o", tmp_path / "t.json", prog).returncode == 0
    doc = json.loads((tmp_path / "t.json").read_text())
    assert doc["metadata"]["program"] == f"{tmp_path}/prog\\xff"
    assert {f["function"] for f in doc["functions"]} == {"main", "fib", "apply", "square", "helper"}
    assert run_cli("convert", tmp_path / "t.json", "-o", out).returncode == 0
    for cmd in ("info", "report", "replay"):
        proc = run_cli(cmd, out)
        assert proc.returncode == 0 and proc.stderr == b"", proc.stderr


def test_toggle_signal_the_runtime_would_not_take(tmp_path):
    for bad in ("FOO", "KILL", "SEGV", "9", "99"):
        proc = run_cli("run", "--toggle-signal", bad, fixture("recursion"), cwd=tmp_path)
        assert proc.returncode == 2 and proc.stdout == b""      # refused before the program ran
        assert proc.stderr.decode().splitlines()[-1].startswith(
            f"calltrace run: error: argument --toggle-signal: '{bad}' is not USR1, USR2, PROF, WINCH, ")
    assert run_cli("run", "-q", "--toggle-signal", "USR2", "-o", tmp_path / "t.json", fixture("recursion"),
                   cwd=tmp_path).returncode == 0


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGHUP])
def test_signal_while_exporting_leaves_no_partial_file(tmp_path, sig):
    """SIGTERM or SIGHUP while an export is being written: the temporary
    file is removed, no output appears, and calltrace dies by the signal."""
    import subprocess
    import time
    from conftest import ROOT, cli_process
    exe = tmp_path / "calls"
    subprocess.run(["gcc", "-O2", "-finstrument-functions", "-rdynamic", str(ROOT / "bench" / "calls.c"),
                    "-o", str(exe)], check=True, timeout=120)
    run_cli("run", "-q", "-o", tmp_path / "big.parquet", exe, "1000000", cwd=tmp_path, check=True)
    # At its default, as in a terminal: a suite started with nohup ignores
    # SIGHUP, and calltrace rightly leaves an ignored signal ignored.
    with cli_process("export", "-f", "chrome", "--max-events", "3000000", tmp_path / "big.parquet",
                     "-o", tmp_path / "out.json", cwd=tmp_path, stderr=subprocess.PIPE,
                     preexec_fn=lambda: signal.signal(sig, signal.SIG_DFL)) as proc:
        deadline = time.monotonic() + 60         # a bound for a hang, not a speed figure
        while not any(n.startswith(".calltrace-") for n in os.listdir(tmp_path)):
            assert proc.poll() is None and time.monotonic() < deadline, "the export never began writing"
            time.sleep(0.01)
        proc.send_signal(sig)
        assert proc.wait(timeout=60) == -sig
        assert proc.stderr.read() == b""
    assert sorted(os.listdir(tmp_path)) == ["big.parquet", "calls"]
