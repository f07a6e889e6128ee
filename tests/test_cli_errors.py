"""Bad input gets one clear line and a documented status, never a traceback."""
from __future__ import annotations

import os
import stat

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
