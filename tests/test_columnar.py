"""The Parquet encoding of the trace format: written by run/convert/export,
read by every post-mortem command, convertible both ways without loss, and
readable without calltrace (DuckDB)."""
from __future__ import annotations

import json
import os
import subprocess

import duckdb
import pyarrow.parquet as pq
import pytest

import calltrace
from calltrace.trace.writer import write_trace
from conftest import fixture, load_json, run_cli, validate, validate_footer
from postmortem_util import build_random, cli_stdout, metadata, write_demo


def footer(path) -> dict:
    return validate_footer(json.loads(pq.ParquetFile(path).metadata.metadata[b"calltrace"]))


def raw_stream(tmp_path, program: str, **env) -> str:
    """A raw stream left by the runtime, as `calltrace run` would convert it."""
    raw_dir = tmp_path / "raw"
    raw_dir.mkdir()
    lib = run_cli("lib", check=True).stdout.decode().strip()
    full = {**{k: v for k, v in os.environ.items() if not k.startswith("CALLTRACE_")},
            "LD_PRELOAD": lib, "CALLTRACE_RAW_DIR": str(raw_dir), **env}
    subprocess.run([program], env=full, stdout=subprocess.DEVNULL, timeout=60, check=True)
    (raw,) = raw_dir.glob("*.raw")
    return str(raw)


def test_run_writes_parquet_one_row_per_call(tmp_path):
    out = tmp_path / "t.parquet"
    p = run_cli("run", "-q", "-o", out, fixture("threads"), check=True)
    assert p.returncode == 0
    doc = footer(out)
    md = doc["metadata"]
    assert doc["format"] == "calltrace" and doc["version"] == 1
    assert pq.ParquetFile(out).metadata.num_rows == md["total_calls"] == 31
    assert [t["calls"] for t in doc["threads"]] == [3, 7, 7, 7, 7]
    assert [t["first_row"] for t in doc["threads"]] == [0, 3, 10, 17, 24]
    # Columns every call has are REQUIRED: no definition levels to write or read.
    schema = pq.ParquetFile(out).schema
    required = [schema.column(i).name for i in range(len(schema)) if schema.column(i).max_definition_level == 0]
    assert required == ["thread", "tid", "call", "depth", "function", "start_ns", "duration_ns",
                        "incomplete", "unwound", "before_attach"]
    # Any reader: DuckDB's counts per function equal the functions table.
    counts = dict(duckdb.sql(f"SELECT function, count(*) FROM '{out}' GROUP BY 1").fetchall())
    assert counts == {f["function"]: f["calls"] for f in doc["functions"]}
    # parent is the nearest earlier call one level up, in the same thread
    rows = duckdb.sql(f"SELECT call, parent, depth, thread FROM '{out}' ORDER BY call").fetchall()
    for call, parent, depth, thread in rows:
        if depth == 0:
            assert parent is None
        else:
            assert rows[parent][2] == depth - 1 and rows[parent][3] == thread
            assert all(r[2] >= depth for r in rows[parent + 1:call])


@pytest.mark.parametrize("program, env, key, count", [
    ("argtypes", {"CALLTRACE_CAPTURE_ARGS": "1"}, "args", 34),
    ("jumps", {}, "unwound", 3), ("texit", {}, "unwound", 3),
    ("toggle", {"CALLTRACE_TOGGLE_SIGNAL": "SIGUSR1"}, "incomplete", 1),
    ("threads", {}, "function", 3 + 4 * 7)])
def test_raw_to_parquet_equals_raw_to_json(tmp_path, program, env, key, count):
    """One raw stream converted both ways: captured arguments, calls left
    by longjmp or pthread_exit, calls that returned while recording was
    off, threads after the first (their parents' rows)."""
    raw = raw_stream(tmp_path, fixture(program), **env)
    run_cli("convert", raw, "-o", tmp_path / "a.json", check=True)
    run_cli("convert", raw, "-o", tmp_path / "a.parquet", check=True)
    run_cli("convert", tmp_path / "a.parquet", "-o", tmp_path / "b.json", check=True)
    footer(tmp_path / "a.parquet")
    a, b = load_json(tmp_path / "a.json"), load_json(tmp_path / "b.json")
    assert sum(1 for t in a["threads"] for c in t["calls"] if key in c and c[key] is not False) == count
    assert a == validate(b)
    parent = pq.read_table(tmp_path / "a.parquet", columns=["call", "parent", "depth"]).to_pydict()
    stack = []
    for call, up, depth in zip(parent["call"], parent["parent"], parent["depth"]):
        del stack[depth:]
        assert up == (stack[-1] if stack else None)
        stack.append(call)


def test_json_parquet_json_round_trip(tmp_path):
    """Every optional call field (incomplete, unwound, before_attach, args,
    return, call_site, args_note) survives JSON -> Parquet -> JSON."""
    src = write_demo(tmp_path / "demo.json")
    doc = load_json(src)
    calls = doc["threads"][0]["calls"]
    calls[1]["call_site"] = "0x401234"
    calls[2]["args_note"] = "no DWARF"
    calls[3]["unwound"] = True
    calls[4]["before_attach"] = True
    doc["threads"][1]["calls"][0]["incomplete"] = True
    with open(src, "w") as f:
        json.dump(doc, f)
    run_cli("convert", src, "-o", tmp_path / "d.parquet", check=True)
    footer(tmp_path / "d.parquet")
    run_cli("convert", tmp_path / "d.parquet", "-o", tmp_path / "back.json", check=True)
    assert load_json(tmp_path / "back.json") == doc
    # the library reads the Parquet file as the same calls
    a, b = calltrace.load(src), calltrace.load(tmp_path / "d.parquet")
    assert a.metadata == b.metadata and a.functions == b.functions
    assert [[c for c in t.calls] for t in a.threads] == [[c for c in t.calls] for t in b.threads]


def test_random_traces_round_trip(tmp_path):
    b = build_random([["a", "b", None, "c", "a", None], ["x", "y", "z"], []], with_args=True)
    src = tmp_path / "r.json"
    write_trace(str(src), metadata(b), b.functions(), list(b.threads.values()))
    run_cli("export", src, "-f", "parquet", "-o", tmp_path / "r.parquet", check=True)
    footer(tmp_path / "r.parquet")
    run_cli("convert", tmp_path / "r.parquet", check=True)   # default name: r.json beside it
    assert load_json(tmp_path / "r.json") == load_json(src)


@pytest.mark.parametrize("args", [["replay"], ["report"], ["report", "--threads"],
                                  ["report", "--slowest", "3"], ["replay", "-F", "^fib", "-D", "2"],
                                  ["export", "-f", "folded", "-o", "-"],
                                  ["export", "-f", "chrome", "-o", "-"]])
def test_post_mortem_reads_either_encoding(tmp_path, args):
    src = write_demo(tmp_path / "demo.json")
    run_cli("convert", src, "-o", tmp_path / "demo.parquet", check=True)
    assert cli_stdout(*args, tmp_path / "demo.parquet") == cli_stdout(*args, src)


def test_info_and_diff_on_parquet(tmp_path):
    src = write_demo(tmp_path / "demo.json")
    run_cli("convert", src, "-o", tmp_path / "demo.parquet", check=True)
    a = cli_stdout("info", src).replace(str(src), "T")
    b = cli_stdout("info", tmp_path / "demo.parquet").replace(str(tmp_path / "demo.parquet"), "T")
    assert a == b
    assert a.endswith("threads (2):\n       100      10 calls  [main]\n       101       2 calls  worker-1\n")
    d = cli_stdout("diff", "-a", src, tmp_path / "demo.parquet")
    assert d.count("  +0.0%  ") == 6 and "  6 -> 6  fib\n" in d
    assert cli_stdout("diff", src, tmp_path / "demo.parquet").endswith("no differences\n")


def test_not_a_calltrace_parquet(tmp_path):
    import pyarrow as pa
    path = tmp_path / "other.parquet"
    pq.write_table(pa.table({"x": [1, 2]}), path)
    p = run_cli("report", path)
    assert p.returncode == 2
    assert p.stderr.decode() == (f"calltrace: error: {path}: a Parquet file, but not a calltrace "
                                 "trace (no calltrace key in its metadata)\n")


def test_foreign_columns_under_a_calltrace_footer(tmp_path):
    """The footer copied onto other columns: one line naming what is wrong."""
    import pyarrow as pa
    run_cli("run", "-q", "-o", tmp_path / "t.parquet", fixture("recursion"), check=True)
    t = pq.read_table(tmp_path / "t.parquet")
    kv = pq.ParquetFile(tmp_path / "t.parquet").metadata.metadata
    cases = {"dropped": (t.drop_columns(["depth"]), "no depth column"),
             "retyped": (t.set_column(t.schema.get_field_index("start_ns"), "start_ns",
                                      pa.array([str(v) for v in t.column("start_ns").to_pylist()])),
                         "its start_ns column holds string")}
    for name, (table, why) in cases.items():
        path = tmp_path / f"{name}.parquet"
        pq.write_table(table.replace_schema_metadata(kv), path)
        for cmd in ("info", "replay", "convert"):
            p = run_cli(cmd, path, cwd=tmp_path)
            assert (p.returncode, p.stderr.decode()) == (
                2, f"calltrace: error: {path}: a calltrace footer, but {why}: not a calltrace trace\n")


def test_damaged_page_is_one_line_naming_the_trace(tmp_path):
    """A page that no longer decodes: the input is named, not the output."""
    path = tmp_path / "t.parquet"
    run_cli("run", "-q", "-o", path, fixture("recursion"), check=True)
    data = bytearray(path.read_bytes())
    f = pq.ParquetFile(path)
    # into the depth column's page (header or zstd frame; its bytes are the
    # same in every run of this fixture, so the damage is always caught)
    col = f.metadata.row_group(0).column(f.schema_arrow.get_field_index("depth"))
    data[col.data_page_offset + 20] ^= 0xFF
    bad = tmp_path / "bad.parquet"
    bad.write_bytes(bytes(data))
    for cmd in (("replay", bad), ("export", "-f", "chrome", bad, "-o", tmp_path / "e.json"),
                ("convert", bad, "-o", tmp_path / "e2.json")):
        p = run_cli(*cmd, cwd=tmp_path)
        err = p.stderr.decode()
        assert p.returncode == 2 and len(err.splitlines()) == 1, err
        assert err.startswith(f"calltrace: error: {bad}: damaged or foreign Parquet data: "), err
    assert sorted(os.listdir(tmp_path)) == ["bad.parquet", "t.parquet"]


def test_dataset_of_forked_processes(tmp_path):
    """-o DIR/: every process of the run in host=/pid= partitions."""
    out = tmp_path / "ds"
    run_cli("run", "-q", "-o", f"{out}/", fixture("forks"), check=True)
    files = sorted(out.glob("host=*/pid=*/calls.parquet"))
    assert len(files) == 2
    totals = {int(f.parent.name[4:]): footer(f)["metadata"]["total_calls"] for f in files}
    parents = {footer(f)["metadata"]["pid"]: footer(f)["metadata"]["parent_pid"] for f in files}
    assert sorted(parents.values(), key=str) == [min(parents), None] or \
        sorted(parents.values(), key=str) == [max(parents), None]
    got = dict(duckdb.sql(f"SELECT pid, count(*) FROM read_parquet('{out}/**/*.parquet', "
                          "hive_partitioning=true) GROUP BY pid").fetchall())
    assert got == totals
    # the same through calltrace sql's views
    text = cli_stdout("sql", "--csv", out, "SELECT pid, count(*) AS n FROM calls GROUP BY pid ORDER BY pid")
    assert text == "pid,n\n" + "".join(f"{pid},{n}\n" for pid, n in sorted(totals.items()))


def test_dataset_of_exec_images(tmp_path):
    out = tmp_path / "ds"
    assert run_cli("run", "-q", "-o", f"{out}/", fixture("execs")).returncode == 4   # its own status
    (folder,) = out.glob("host=*/pid=*")
    assert sorted(f.name for f in folder.iterdir()) == ["calls.exec1.parquet", "calls.parquet"]
    assert footer(folder / "calls.parquet")["metadata"]["termination"] == "exec"


def test_run_summary_suggests_parquet_for_big_json(tmp_path, capsys):
    from calltrace.cli.run import JSON_NOTE_BYTES, _suggest_parquet
    big = tmp_path / "big.json"
    with open(big, "wb") as f:
        f.truncate(JSON_NOTE_BYTES)        # sparse: no disk used
    _suggest_parquet(str(big))
    _suggest_parquet(str(tmp_path / "missing.json"))
    err = capsys.readouterr().err
    assert err == (f"calltrace: note: {big} is 256 MB of JSON; -o trace.parquet writes the same "
                   f"trace far smaller and faster to read (calltrace convert {big} -o "
                   "trace.parquet converts this one)\n")


@pytest.mark.parametrize("program", ["threads", "recursion", "jumps"])
def test_kernel_stats_equal_converter_table(tmp_path, program):
    """report --threads (runtime/kernels.c, from the calls) summed over the
    threads equals the function table the converter computed from the raw
    events, in both encodings."""
    from calltrace.analysis.stats import thread_stats
    out = tmp_path / "t.parquet"
    run_cli("run", "-q", "-o", out, fixture(program))
    run_cli("convert", out, "-o", tmp_path / "t.json", check=True)
    for path in (out, tmp_path / "t.json"):
        trace = calltrace.load(path)
        got: dict[str, list[int]] = {}
        for t in trace.threads:
            for s in thread_stats(t):
                g = got.setdefault(s.function, [0, 0, 0, s.min_ns, s.max_ns])
                g[0] += s.calls
                g[1] += s.total_ns
                g[2] += s.self_ns
                g[3] = min(g[3], s.min_ns)
                g[4] = max(g[4], s.max_ns)
        assert got == {f.function: [f.calls, f.total_ns, f.self_ns, f.min_ns, f.max_ns]
                       for f in trace.functions if f.calls}


def test_slowest_reads_winners_extras_by_row(tmp_path, monkeypatch):
    """From Parquet, --slowest reads the timing columns only and then each
    winner's optional columns by row number: across many row groups it
    finds the same calls with the same args and incomplete marks as from
    JSON."""
    from calltrace.analysis import slowest
    from calltrace.trace import columns
    steps = []
    for i in range(60):
        steps += [f"f{i % 7}", f"g{i % 3}", None, None] if i % 5 else [f"h{i}", f"k{i}", None]
    b = build_random([steps, ["x", "y", None, "z"]], with_args=True)
    src = tmp_path / "r.json"
    write_trace(str(src), metadata(b), b.functions(), list(b.threads.values()))
    monkeypatch.setattr(columns, "BATCH", 7)
    columns.write_trace(str(tmp_path / "r.parquet"), calltrace.load(str(src)))
    assert pq.ParquetFile(tmp_path / "r.parquet").metadata.num_row_groups == 19   # 121 + 2 calls
    js, pt = calltrace.load(str(src)), calltrace.load(str(tmp_path / "r.parquet"))
    total = js.metadata["total_calls"]
    for n in (1, 5, 40, total):
        want = slowest(js, n)
        assert slowest(pt, n) == want
    # the 12 h* calls never return, nor do x and z (under x)
    assert sum(bool(s.extra and s.extra.get("incomplete")) for s in want) == 14
    assert all(s.extra["args"][0]["value"] == s.path[-1] for s in want)


def _flip_in_page(path, column: str, out, past: int = 0) -> None:
    """One byte flipped amid the values of `column`'s first page (the
    start_ns column is delta-encoded and not compressed), `past` bytes
    after its middle."""
    data = bytearray(path.read_bytes())
    meta = pq.ParquetFile(path).metadata.row_group(0)
    col = meta.column(pq.ParquetFile(path).schema_arrow.get_field_index(column))
    data[col.data_page_offset + col.total_compressed_size // 2 + past] ^= 0x10
    out.write_bytes(bytes(data))


def _decodes(path, column: str):
    try:
        return pq.read_table(path, columns=[column]).column(0)
    except OSError:     # the byte was a block header's: this one is noticed
        return None


def test_page_checksums_catch_what_would_decode(tmp_path):
    """A damaged byte in an uncompressed column decodes to other numbers:
    without its page's CRC no reader could tell. calltrace writes the CRCs
    and checks them: one line naming the trace, never other start times."""
    path = tmp_path / "t.parquet"
    run_cli("run", "-q", "-o", path, fixture("deep"), check=True)     # 5001 calls
    table = pq.read_table(path)
    plain = tmp_path / "plain.parquet"        # the same calls, no CRCs
    with pq.ParquetWriter(plain, table.schema, column_encoding={"start_ns": "DELTA_BINARY_PACKED"},
                          compression={c: "none" if c == "start_ns" else "zstd" for c in table.column_names},
                          use_dictionary=["function"]) as w:
        w.write_table(table)
    # Most bytes there are bit-packed deltas; a few are the blocks' headers.
    for past in range(64):
        _flip_in_page(plain, "start_ns", tmp_path / "plain-bad.parquet", past)
        silent = _decodes(tmp_path / "plain-bad.parquet", "start_ns")
        if silent is not None:
            break
    assert silent.length() == table.num_rows and not silent.equals(table.column("start_ns"))
    _flip_in_page(path, "start_ns", tmp_path / "bad.parquet")
    for cmd in (("replay", "bad.parquet"), ("convert", "bad.parquet", "-o", "e.json")):
        p = run_cli(*cmd, cwd=tmp_path)
        err = p.stderr.decode()
        assert p.returncode == 2 and len(err.splitlines()) == 1, err
        assert err.startswith("calltrace: error: bad.parquet: damaged or foreign Parquet data: "), err
        assert "CRC" in err, err
    assert not (tmp_path / "e.json").exists()
