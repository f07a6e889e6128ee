"""Issue 6, safety: the runtime writes only its own output paths, never
through a symlink planted where its files go, and honours the umask."""
from __future__ import annotations

import os
import stat
import subprocess
import sys
import time

import pytest

from conftest import clean_env, fixture, lib, load_json, preload_env, run_cli, validate


def test_symlink_planted_at_raw_path_not_followed(tmp_path):
    """The bare-mode raw file is OUT.<pid>.raw: predictable. Plant a symlink
    there (to a file the runtime must not touch) before the program starts."""
    work = tmp_path / "work"
    work.mkdir()
    victim = tmp_path / "victim"
    victim.write_bytes(b"precious\n")
    # sh prints its pid, waits, then becomes the traced program (same pid).
    proc = subprocess.Popen(["/bin/sh", "-c", f'echo $$; read x; exec env LD_PRELOAD="{lib()}" '
                             f'CALLTRACE_OUTPUT=t.json "{fixture("recursion")}"'],
                            cwd=work, env=clean_env(), stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)
    pid = int(proc.stdout.readline())
    os.symlink(victim, work / f"t.json.{pid}.raw")
    out, err = proc.communicate(b"\n", timeout=120)
    assert (proc.returncode, out, err) == (0, b"fib=5 sq=25 h=7\n", b"")
    assert victim.read_bytes() == b"precious\n"
    assert sorted(os.listdir(work)) == ["t.json", f"t.json.{pid}.raw"]
    assert os.path.islink(work / f"t.json.{pid}.raw")
    assert validate(load_json(work / "t.json"))["metadata"]["total_calls"] == 21


@pytest.mark.parametrize("how", ["bare", "run"])
def test_symlink_at_output_path_never_written_through(tmp_path, how):
    victim = tmp_path / "victim"
    victim.write_bytes(b"precious\n")
    work = tmp_path / "work"
    work.mkdir()
    os.symlink(victim, work / "t.json")
    if how == "bare":
        proc = subprocess.run([fixture("recursion")], cwd=work, capture_output=True, timeout=120,
                              env=preload_env(CALLTRACE_OUTPUT="t.json"))
        assert (proc.returncode, proc.stdout) == (0, b"fib=5 sq=25 h=7\n")
        # The JSON goes to a temporary file renamed over the link: the link is replaced.
        assert not os.path.islink(work / "t.json")
        assert validate(load_json(work / "t.json"))["metadata"]["total_calls"] == 21
    else:
        proc = run_cli("run", "-o", "t.json", fixture("recursion"), cwd=work)
        assert proc.returncode == 2
        assert proc.stderr == b"calltrace: error: t.json is a symbolic link: refusing to write a trace through it\n"
        assert os.path.islink(work / "t.json")
    assert victim.read_bytes() == b"precious\n"
    assert os.listdir(work) == ["t.json"]


@pytest.mark.parametrize("how", ["bare", "run"])
@pytest.mark.parametrize("umask", [0o022, 0o077, 0o027])
def test_files_created_with_users_umask(tmp_path, how, umask):
    def pre():
        os.umask(umask)
    if how == "bare":
        proc = subprocess.run([fixture("forks"), "100"], cwd=tmp_path, capture_output=True,
                              timeout=120, preexec_fn=pre,
                              env=preload_env(CALLTRACE_OUTPUT="t.json"))
    else:
        proc = subprocess.run([sys.executable, "-m", "calltrace", "run", "-q", "-o", "t.json",
                               fixture("forks"), "100"],
                              cwd=tmp_path, capture_output=True, timeout=120, preexec_fn=pre,
                              env=clean_env())
    assert proc.returncode == 0
    names = sorted(os.listdir(tmp_path))
    assert len(names) == 2 and names[1] == "t.json" and names[0].startswith("t.")
    for n in names:
        assert stat.S_IMODE(os.stat(tmp_path / n).st_mode) == 0o666 & ~umask, n


def test_raw_file_mode_while_running(tmp_path):
    """The raw stream itself (bare mode, next to the output) while it is written."""
    proc = subprocess.Popen([fixture("texit"), "exit"], cwd=tmp_path, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, preexec_fn=lambda: os.umask(0o077),
                            env=preload_env(CALLTRACE_OUTPUT="t.json"))
    raw = tmp_path / f"t.json.{proc.pid}.raw"
    mode = None
    deadline = time.monotonic() + 30     # the file lives from start-up until the trace is written
    while mode is None and time.monotonic() < deadline and proc.poll() is None:
        try:
            mode = stat.S_IMODE(os.stat(raw).st_mode)
        except FileNotFoundError:
            time.sleep(0.002)
    proc.communicate(timeout=120)
    assert proc.returncode == 5
    assert mode == 0o600
    assert os.listdir(tmp_path) == ["t.json"]


def test_nothing_written_outside_output_folder(tmp_path):
    """cwd, HOME and the output folder are all watched; only the trace appears."""
    home, cwd, outdir = tmp_path / "home", tmp_path / "cwd", tmp_path / "out"
    for d in (home, cwd, outdir):
        d.mkdir()
    proc = subprocess.run([fixture("execs"), "v"], cwd=cwd, capture_output=True, timeout=120,
                          env=preload_env(CALLTRACE_OUTPUT=str(outdir / "t.json"),
                                        HOME=str(home)))
    assert proc.returncode == 4
    assert os.listdir(home) == [] and os.listdir(cwd) == []
    pid = load_json(outdir / "t.json")["metadata"]["pid"]
    assert sorted(os.listdir(outdir)) == sorted(["t.json", f"t.{pid}-1.json"])
