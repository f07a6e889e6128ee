"""Issues 14 and 9.1-9.3, 9.7: disk use follows the calls recorded; a full
disk, a budget or a nearly full file system stop recording with the loss
counted and never harm the program; rolling output at any interval; one
converter at a time; a single-threaded program stays single-threaded."""
from __future__ import annotations

import os
import subprocess
import threading
import time

import pytest

from calltrace.record.raw import RawStream, read_info
from conftest import FIXTURES, clean_env, fixture, load_json, preload_env, run_cli, validate


def record(folder, *argv, timeout=300, **env):
    """Run under the recorder the way `calltrace run` does, raw stream kept in `folder`."""
    full = preload_env(CALLTRACE_RAW_DIR=str(folder), **env)
    proc = subprocess.run([str(a) for a in argv], env=full, capture_output=True, timeout=timeout)
    raws = sorted(str(p) for p in folder.glob("*.raw"))
    return proc, raws


def native(*argv):
    return subprocess.run([str(a) for a in argv], env=clean_env(), capture_output=True, timeout=300)


def summary(raw):
    with RawStream(raw) as r:
        r.analyze()
        return r.summary(), r.threads()


def test_short_threads_cost_bytes_not_chunks(tmp_path):
    proc, (raw,) = record(tmp_path, fixture("churn"), 20000, 1, 8)
    assert (proc.returncode, proc.stdout, proc.stderr) == (0, b"threads 20000 calls 1\n", b"")
    s, threads = summary(raw)
    assert (s.total_calls, s.threads, s.dropped) == (20001, 20001, 0)
    assert sorted(t.calls for t in threads) == [1] * 20001
    # 40 bytes a thread (segment header, ENTER, EXIT) plus a few chunks:
    # the header, the META chunk, the helper's four prefaulted chunks.
    used = os.stat(raw).st_blocks * 512
    assert used < 20000 * 64 + 6 * 256 * 1024, used


def test_thread_names_default_and_own(tmp_path):
    out = tmp_path / "t.json"
    proc = run_cli("run", "-q", "-o", out, fixture("churn"), "3", "2", "1", cwd=tmp_path)
    assert proc.returncode == 0
    doc = validate(load_json(out))
    assert [t["name"] for t in doc["threads"]] == ["churn"] * 4
    assert [len(t["calls"]) for t in doc["threads"]] == [1, 2, 2, 2]


@pytest.fixture
def small_fs(tmp_path):
    """A real 2 MiB tmpfs, unmounted afterwards."""
    mnt = tmp_path / "small"
    mnt.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(mnt)], check=True)
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=True)


@pytest.mark.parametrize("argv,calls", [
    (("many_threads", 2, 1000000), 2 * 1000000 + 3),
    (("churn", 3000, 1000, 8), 3000 * 1000 + 1),
])
def test_disk_full_program_unharmed(small_fs, argv, calls):
    """Disk full (posix_fallocate fails): no SIGBUS; the program's output and
    status are its own; every call is recorded or counted lost."""
    want = native(fixture(argv[0]), *argv[1:])
    proc, (raw,) = record(small_fs, fixture(argv[0]), *argv[1:], CALLTRACE_MIN_FREE="0")
    assert (proc.returncode, proc.stdout) == (want.returncode, want.stdout) == (0, want.stdout)
    assert b"cannot grow the raw trace" in proc.stderr and b"No space left on device" in proc.stderr
    s, _ = summary(raw)
    assert s.lost > 0 and s.total_calls + s.lost == calls
    assert read_info(raw).stop_reason == 2


def test_nearly_full_file_system_stops_first(small_fs):
    """The default reserve (the smaller of 1 GiB and 5%) stops recording
    before the file system is full."""
    proc, (raw,) = record(small_fs, fixture("many_threads"), 2, 1000000)
    assert (proc.returncode, proc.stdout) == (0, b"threads 2 calls 1000000\n")
    assert b"less than 0 MB free (CALLTRACE_MIN_FREE)" in proc.stderr
    s, _ = summary(raw)
    assert s.lost > 0 and s.total_calls + s.lost == 2 * 1000000 + 3
    assert read_info(raw).stop_reason == 4
    st = os.statvfs(small_fs)
    assert st.f_bavail * st.f_frsize >= 2 * 1024 * 1024 // 20


def test_max_size_budget(tmp_path):
    out = tmp_path / "t.json"
    proc = run_cli("run", "-q", "--max-size", "1M", "-o", out, fixture("many_threads"), "1", "1000000",
                   cwd=tmp_path)
    assert (proc.returncode, proc.stdout) == (0, b"threads 1 calls 1000000\n")
    assert b"size budget of 1048576 bytes" in proc.stderr
    m = validate(load_json(out))["metadata"]
    assert m["options"]["max_size"] == 1 << 20
    assert m["total_calls"] + m["dropped_events"] == 1000000 + 3
    assert 0 < m["total_calls"] < 1 << 16
    assert any("size budget" in n for n in m["notes"])


def test_max_size_refused_when_not_a_size(tmp_path):
    proc = run_cli("run", "--max-size", "lots", fixture("recursion"), cwd=tmp_path)
    assert proc.returncode == 2 and b"'lots' is not a size" in proc.stderr


def test_rolling_small_interval_under_run(tmp_path):
    """--flush-interval 1000: no livelock; every part holds calls; together
    they hold every call."""
    out = tmp_path / "r.json"
    t0 = time.monotonic()
    proc = run_cli("run", "-q", "--flush-interval", "1000", "-o", out, fixture("callloop"), "10000",
                   cwd=tmp_path, timeout=120)
    assert proc.returncode == 0 and time.monotonic() - t0 < 120
    docs = [validate(load_json(p)) for p in sorted(tmp_path.glob("r.0*.json"))]
    totals = [d["metadata"]["total_calls"] for d in docs]
    assert len(docs) > 5 and all(n > 0 for n in totals)
    assert sum(totals) == 10000 + 1   # callloop N: main and N calls under it


@pytest.mark.parametrize("interval", ["1", "1000"])
def test_rolling_bare_preload_finishes(tmp_path, interval):
    """Bare LD_PRELOAD, rolling at a small interval: the program finishes,
    parts are converted one at a time, the newest ten are kept."""
    full = preload_env(CALLTRACE_OUTPUT="b.json", CALLTRACE_FLUSH_INTERVAL=interval,
                CALLTRACE_OUTPUT_ROLLING="1")
    most, seen = [0], threading.Event()

    def watch():
        while not seen.is_set():
            n = 0
            for pid in os.listdir("/proc"):
                try:
                    cmd = open(f"/proc/{pid}/cmdline", "rb").read()
                except OSError:
                    continue
                n += b"\0convert\0" in cmd and str(tmp_path).encode() in cmd
            most[0] = max(most[0], n)
            time.sleep(0.01)
    w = threading.Thread(target=watch)
    w.start()
    try:
        proc = subprocess.run([fixture("callloop"), "200000"], cwd=tmp_path, env=full, capture_output=True,
                              timeout=120)
        for _ in range(300):
            if not list(tmp_path.glob("*.raw")):
                break
            time.sleep(0.1)
    finally:
        seen.set()
        w.join()
    assert (proc.returncode, proc.stdout) == (0, native(fixture("callloop"), "200000").stdout)
    assert not list(tmp_path.glob("*.raw"))
    files = sorted(tmp_path.glob("b.0*.json"))
    assert 1 <= len(files) <= 10
    assert all(validate(load_json(f))["metadata"]["total_calls"] > 0 for f in files)
    # One converter while the program runs, and the last one at its exit.
    assert most[0] <= 2


@pytest.mark.parametrize("how", ["run", "bare"])
def test_single_threaded_program_can_unshare(tmp_path, how):
    want = native(fixture("unshare"))
    if how == "run":
        proc = run_cli("run", "-q", "-o", tmp_path / "t.json", fixture("unshare"), cwd=tmp_path)
    else:
        proc, _ = record(tmp_path, fixture("unshare"))
    assert (proc.returncode, proc.stdout) == (want.returncode, want.stdout) == (0, b"unshare 0\n")


def test_calls_outliving_many_chunks_keep_their_durations(tmp_path):
    """main spans every chunk of the stream: the converter stores its
    duration after the page it lives on was let go (through the file, not
    the map), and it still covers all of its 300,000 calls (297,000 tick,
    3,000 rare)."""
    out = tmp_path / "t.json"
    run_cli("run", "-q", "-o", out, fixture("callloop"), "300000", env={"CALLTRACE_BUFFER_KB": "16"},
            check=True)
    calls = load_json(out)["threads"][0]["calls"]
    main, ticks = calls[0], calls[1:]
    assert main["function"] == "main" and len(ticks) == 300000
    assert sum(c["function"] == "rare" for c in ticks) == 3000
    end = main["start_ns"] + main["duration_ns"]
    assert main["start_ns"] <= ticks[0]["start_ns"]
    assert ticks[-1]["start_ns"] + ticks[-1]["duration_ns"] <= end
    assert sum(t["duration_ns"] for t in ticks) <= main["duration_ns"]


def test_chunks_touched_by_hand_keep_their_events(tmp_path):
    """Before Linux 5.14 madvise has no MADV_POPULATE_WRITE and the runtime
    writes to each page of a new chunk instead; the first page holds the
    chunk's header. Every call is still there (callloop N: N + 1 calls), in
    many 16 KB chunks, prefaulted by the helper thread and by the hooks."""
    shim = str(FIXTURES / "libnopopulate.so")
    folder = tmp_path / "raw"
    folder.mkdir()
    env = preload_env(CALLTRACE_RAW_DIR=str(folder), CALLTRACE_BUFFER_KB="16")
    env["LD_PRELOAD"] = shim + ":" + env["LD_PRELOAD"]
    proc = subprocess.run([fixture("callloop"), "100000"], env=env, capture_output=True, timeout=60)
    assert (proc.returncode, proc.stdout) == (0, b"sum 4900050000\n")
    (raw,) = folder.glob("*.raw")
    s, _ = summary(str(raw))
    assert (s.total_calls, s.dropped) == (100001, 0)
