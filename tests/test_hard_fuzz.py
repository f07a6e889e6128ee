"""Issue 6, bad input: truncated and corrupted raw streams (as the runtime
writes them) through `calltrace convert`, and truncated and corrupted JSON
traces through the reader: clear errors only, never a crash or a traceback."""
from __future__ import annotations

import glob
import hashlib
import os
import re
import struct
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import calltrace
from calltrace.errors import CalltraceError
from calltrace.record.raw import read_info
from conftest import ROOT, clean_env, fixture, preload_env, run_cli

# CI runs a fixed, derandomized choice of edits, applied to fresh recordings
# (so the bytes differ from run to run: a failing input is kept under
# build/fuzz-failures); CALLTRACE_FUZZ_EXAMPLES=N runs a longer random search
# (N examples per test) when hunting for new failures.
_LONG = int(os.environ.get("CALLTRACE_FUZZ_EXAMPLES", "0"))
SETTINGS = settings(max_examples=_LONG or 60, deadline=None, derandomize=not _LONG, database=None,
                    suppress_health_check=[HealthCheck.function_scoped_fixture,
                                           HealthCheck.too_slow])
JSON_SETTINGS = settings(SETTINGS, max_examples=_LONG or 300)


def _record(folder: Path, name: str, *args: str) -> bytes:
    # Small chunks: several per thread, so chunk boundaries get corrupted too.
    env = preload_env(CALLTRACE_RAW_DIR=str(folder), CALLTRACE_BUFFER_KB="16")
    subprocess.run([fixture(name), *args], env=env, capture_output=True, timeout=120, check=True)
    (raw,) = glob.glob(str(folder / "*.raw"))
    return Path(raw).read_bytes()


class Blobs(dict):
    """Keeps hypothesis's failure reports readable (the raw files are ~1 MB)."""

    def __repr__(self):
        return f"<{', '.join(f'{k}: {len(v)} bytes' for k, v in self.items())}>"


@pytest.fixture(scope="module")
def raws(tmp_path_factory):
    out = Blobs()
    for name, args in (("workers", ()), ("jumps", ("sig",)), ("forks", ("3000",))):
        folder = tmp_path_factory.mktemp(f"raw-{name}")
        if name == "forks":
            # the parent's stream; the child's is a second file
            env = preload_env(CALLTRACE_RAW_DIR=str(folder), CALLTRACE_BUFFER_KB="16")
            proc = subprocess.run([fixture(name), *args], env=env, capture_output=True, timeout=120)
            assert proc.returncode == 0
            (raw,) = [r for r in glob.glob(str(folder / "*.raw")) if not read_info(r).ppid]
            out[name] = Path(raw).read_bytes()
        else:
            out[name] = _record(folder, name, *args)
    return out


def convert(tmp_path: Path, data: bytes) -> subprocess.CompletedProcess:
    raw = tmp_path / "fuzz.raw"
    raw.write_bytes(data)
    out = tmp_path / "fuzz.json"
    if out.exists():
        out.unlink()
    env = clean_env()
    env["CALLTRACE_TRACEBACK"] = "1"
    return subprocess.run([sys.executable, "-m", "calltrace", "convert", "-q", str(raw), "-o", str(out)],
                          cwd=tmp_path, env=env, capture_output=True, timeout=120)


def keep_failure(data: bytes, suffix: str) -> str:
    """The inputs vary from run to run (fresh recordings): a failing one is
    kept under build/fuzz-failures so it can be replayed."""
    folder = ROOT / "build" / "fuzz-failures"
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{hashlib.sha1(data).hexdigest()[:12]}{suffix}"
    path.write_bytes(data)
    return str(path)


def check_clean(proc: subprocess.CompletedProcess, what: str) -> None:
    err = proc.stderr.decode(errors="replace")
    ok = proc.returncode >= 0 and "Traceback" not in err and "internal error" not in err and \
        (proc.returncode == 0 or (proc.returncode == 2 and err.startswith("calltrace: error: ") and
                                  err.count("\n") == 1))
    if not ok:
        what += f" (input kept as {keep_failure(Path(proc.args[5]).read_bytes(), '.raw')})"
    assert proc.returncode >= 0, f"{what}: converter killed by signal {-proc.returncode}"
    assert "Traceback" not in err and "internal error" not in err, f"{what}: {err[-2000:]}"
    if proc.returncode:
        assert proc.returncode == 2 and err.startswith("calltrace: error: ") and err.count("\n") == 1, \
            f"{what}: status {proc.returncode}: {err}"


def test_pristine_raws_convert(tmp_path, raws):
    for name, data in raws.items():
        proc = convert(tmp_path, data)
        check_clean(proc, name)
        assert proc.returncode == 0


@SETTINGS
@given(which=st.sampled_from(["workers", "jumps", "forks"]), cut=st.floats(0, 1))
def test_truncated_raw(tmp_path, raws, which, cut):
    data = raws[which]
    n = int(len(data) * cut)
    check_clean(convert(tmp_path, data[:n]), f"{which} cut at {n}")


@SETTINGS
@given(which=st.sampled_from(["workers", "jumps", "forks"]),
       edits=st.lists(st.tuples(st.floats(0, 1), st.integers(0, 2**64 - 1)), min_size=1, max_size=12),
       header=st.booleans())
def test_corrupted_raw_words(tmp_path, raws, which, edits, header):
    """Random 8-byte words overwritten: in the header (sizes, cursor, state),
    in chunk headers and in the event words (kinds, EXT payload counts)."""
    data = bytearray(raws[which])
    span = 4096 if header else len(data)
    for where, value in edits:
        off = min(int(span * where) & ~7, len(data) - 8)
        data[off:off + 8] = struct.pack("<Q", value)
    check_clean(convert(tmp_path, bytes(data)), f"{which} edits {edits} header={header}")


@SETTINGS
@given(which=st.sampled_from(["workers", "jumps"]), seed=st.integers(0, 2**32 - 1),
       flips=st.integers(1, 64))
def test_flipped_bits_raw(tmp_path, raws, which, seed, flips):
    import random
    rnd = random.Random(seed)
    data = bytearray(raws[which])
    for _ in range(flips):
        i = rnd.randrange(len(data))
        data[i] ^= 1 << rnd.randrange(8)
    check_clean(convert(tmp_path, bytes(data)), f"{which} seed {seed} flips {flips}")


# ---- the JSON reader (calltrace/trace/reader.py) -------------------------------

@pytest.fixture(scope="module")
def traces(tmp_path_factory):
    out = Blobs()
    for pretty in (False, True):
        folder = tmp_path_factory.mktemp("json")
        path = folder / "t.json"
        args = ["run", "-q", "-o", path] + (["--pretty"] if pretty else []) + [fixture("workers")]
        run_cli(*args, cwd=folder, check=True)
        out[pretty] = path.read_bytes()
    return out


def read_all(path: Path) -> None:
    t = calltrace.load(path)
    for thread in t.threads:
        for call in thread.calls:
            (call.function, call.depth, call.duration_ns)


def check_reader(tmp_path: Path, data: bytes, what: str) -> None:
    path = tmp_path / "fuzz.json"
    path.write_bytes(data)
    try:
        read_all(path)
    except CalltraceError as e:
        assert str(e) and "\n" not in str(e), \
            f"{what}: unclear error {e!r} (input kept as {keep_failure(data, '.json')})"
    except RecursionError:
        pytest.fail(f"{what}: RecursionError (input kept as {keep_failure(data, '.json')})")
    except Exception as e:  # anything else is a crash of the reader
        pytest.fail(f"{what}: {type(e).__name__}: {e} (input kept as {keep_failure(data, '.json')})")


@JSON_SETTINGS
@given(pretty=st.booleans(), cut=st.floats(0, 1))
def test_truncated_json(tmp_path, traces, pretty, cut):
    data = traces[pretty]
    n = int(len(data) * cut)
    check_reader(tmp_path, data[:n], f"pretty={pretty} cut at {n}")


@JSON_SETTINGS
@given(pretty=st.booleans(),
       edits=st.lists(st.tuples(st.floats(0, 1), st.binary(min_size=1, max_size=6)), min_size=1, max_size=6))
def test_corrupted_json(tmp_path, traces, pretty, edits):
    data = bytearray(traces[pretty])
    for where, junk in edits:
        off = min(int(len(data) * where), len(data) - 1)
        data[off:off + len(junk)] = junk
    check_reader(tmp_path, bytes(data), f"pretty={pretty} edits {edits}")


def test_corrupted_module_record_clear_error(tmp_path, raws):
    data = bytearray(raws["workers"])
    m = re.search(rb"[0-9a-f]+ [0-9a-f]+ [0-9a-f]+ /", bytes(data))
    data[m.start()] = ord("z")
    check_clean(convert(tmp_path, bytes(data)), "module record with a bad address")


def test_module_path_with_nul_clear_error(tmp_path, raws):
    # Found by a longer random run (bits flipped in the META chunk).
    data = bytearray(raws["workers"])
    m = re.search(rb"[0-9a-f]+ [0-9a-f]+ [0-9a-f]+ /", bytes(data))
    data[m.end() + 1] = 0
    check_clean(convert(tmp_path, bytes(data)), "module path with a NUL byte")



def test_damaged_option_record_clear_error(tmp_path, raws):
    # Found in CI: an option record whose value ran into the next records.
    data = bytes(raws["jumps"])
    assert b"toggle_signal=0" in data
    data = data.replace(b"toggle_signal=0", b"toggle_signal=x", 1)
    proc = convert(tmp_path, data)
    check_clean(proc, "damaged option record")
    assert proc.returncode == 2 and b"damaged option record toggle_signal='x'" in proc.stderr


def test_control_character_in_function_name_clear_error(tmp_path, traces):
    # Found in CI: a NUL byte inside a quoted function name.
    head, sep, calls = traces[False].partition(b'"threads":')
    data = head + sep + calls.replace(b'{"function":"spawn"', b'{"function":"spaw\x00"', 1)
    assert data != traces[False]
    path = tmp_path / "nul.json"
    path.write_bytes(data)
    with pytest.raises(CalltraceError, match=r"malformed function name near byte \d+"):
        read_all(path)
    proc = run_cli("replay", path)  # report reads only the functions table
    assert proc.returncode == 2
    assert proc.stderr.decode().startswith("calltrace: error: ") and proc.stderr.count(b"\n") == 1
