"""Issue 6, hard cases: 64 threads x 1M calls recorded without loss; a
program overriding malloc with instrumented code; dlopen'd instrumented
libraries; a raw file that cannot grow."""
from __future__ import annotations

import glob
import os
import resource
import subprocess

import pytest

from calltrace.record.raw import RawStream
from conftest import fixture, lib, load_json, preload_env, run_cli, run_cli_or_kill, validate


def record_raw(tmp_path, *argv, limits=None, timeout=300):
    """Run under the recorder the way `calltrace run` does, keeping the raw
    stream (64M calls as JSON would be gigabytes)."""
    env = preload_env(CALLTRACE_RAW_DIR=str(tmp_path))
    pre = (lambda: [resource.setrlimit(*l) for l in limits]) if limits else None
    proc = subprocess.run([str(a) for a in argv], env=env, capture_output=True, timeout=timeout,
                          preexec_fn=pre)
    raws = glob.glob(str(tmp_path / "*.raw"))
    return proc, raws


@pytest.mark.parametrize("opt", ["", "-O2"])
def test_64_threads_1m_calls_nothing_lost(tmp_path, opt):
    proc, raws = record_raw(tmp_path, fixture("many_threads" + opt), 64, 1000000)
    assert (proc.returncode, proc.stdout, proc.stderr) == (0, b"threads 64 calls 1000000\n", b"")
    (raw,) = raws
    try:
        with RawStream(raw) as r:
            r.analyze()
            s = r.summary()
            threads = r.threads()
    finally:
        os.unlink(raw)   # 1 GB
    assert (s.total_calls, s.threads) == (64 * 1000000 + 3, 65)
    assert (s.dropped, s.incomplete, s.unwound, s.unmatched, s.depth_limited) == (0, 0, 0, 0, 0)
    assert sorted(t.calls for t in threads) == [3] + [1000000] * 64
    assert [t.main for t in threads].count(True) == 1 and threads[0].main and threads[0].calls == 3


def test_raw_file_cannot_grow_program_unharmed(tmp_path):
    lim = 48 << 20
    proc, raws = record_raw(tmp_path, fixture("many_threads"), 4, 1000000,
                            limits=[(resource.RLIMIT_FSIZE, (lim, lim))])
    assert proc.returncode == 0 and proc.stdout == b"threads 4 calls 1000000\n"
    (raw,) = raws
    with RawStream(raw) as r:
        r.analyze()
        s = r.summary()
    # What was not recorded is counted: recorded + lost calls = all calls.
    assert s.lost > 0 and s.total_calls + s.lost == 4000003 and s.dropped == s.lost


def test_dlopen_library_names_resolved(tmp_path):
    for how in ([], ["close"]):
        out = tmp_path / f"d{len(how)}.json"
        proc = run_cli("run", "-q", "-o", out, fixture("dlopener"), *how, cwd=tmp_path)
        assert (proc.returncode, proc.stdout) == (0, b"plugin 7 9\n")
        doc = validate(load_json(out))
        assert [(c["depth"], c["function"]) for c in doc["threads"][0]["calls"]] == [
            (0, "main"), (1, "load"), (1, "use"), (2, "plugin_entry"), (3, "twice"),
            (1, "use"), (2, "plugin_entry"), (3, "twice")]
        funcs = {f["function"]: f for f in doc["functions"]}
        plugin = str(fixture("libplugin.so"))
        assert funcs["plugin_entry"]["module"] == plugin and funcs["twice"]["module"] == plugin
        assert funcs["twice"]["file"].endswith("fixtures/lib/plugin.c") and funcs["twice"]["line"] == 3
        assert "notes" not in doc["metadata"]


def test_dlopen_bare_preload(tmp_path):
    env = preload_env(CALLTRACE_OUTPUT="d.json")
    proc = subprocess.run([fixture("dlopener-O2"), "close"], cwd=tmp_path, env=env,
                          capture_output=True, timeout=120)
    assert (proc.returncode, proc.stdout, proc.stderr) == (0, b"plugin 7 9\n", b"")
    doc = validate(load_json(tmp_path / "d.json"))
    names = [c["function"] for c in doc["threads"][0]["calls"]]
    assert names.count("plugin_entry") == 2 and names.count("twice") == 2


def test_program_own_instrumented_malloc(tmp_path):
    out = tmp_path / "t.json"
    proc = run_cli_or_kill("run", "-q", "-o", out, fixture("mymalloc"), cwd=tmp_path, timeout=120)
    assert (proc.returncode, proc.stdout) == (0, b"sum 6\n")
    doc = validate(load_json(out))
    calls = [(c["depth"], c["function"]) for c in doc["threads"][0]["calls"]]
    start = calls.index((0, "main"))
    assert calls[start:] == [(0, "main"), (1, "build")] + [(2, "malloc"), (3, "bump")] * 3 + \
        [(1, "drop")] + [(2, "free")] * 3


def test_thread_name_not_utf8(tmp_path):
    out = tmp_path / "t.json"
    proc = run_cli("run", "-q", "-o", out, fixture("texit"), "badname", cwd=tmp_path)
    assert proc.returncode == 0 and proc.stderr == b"", proc.stderr.decode()
    doc = validate(load_json(out))
    main, other = doc["threads"]
    assert [(c["depth"], c["function"]) for c in other["calls"]] == [(0, "run4"), (1, "leaf")]
    # bytes ff fe 71, written as \xNN text (docs/FORMAT.md, threads)
    assert other["name"] == "\\xff\\xfeq"
    assert main["name"] == "texit"
