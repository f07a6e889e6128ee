"""The footer index of a Parquet trace (docs/FORMAT.md, "Footer index"):
per-thread functions tables and the longest calls, written with the calls
and read by `report --threads` / `report --slowest N` instead of a scan.
Every answer read from the index must equal the one computed from the
calls, here by the same trace in JSON (which has no index) and by a scan of
the Parquet calls themselves."""
from __future__ import annotations

import json

import pyarrow.parquet as pq
import pytest

import calltrace
from calltrace.analysis import slowest, thread_stats
from calltrace.trace import columns, index
from conftest import fixture, run_cli, validate_footer
from postmortem_util import cli_stdout
from test_columnar import raw_stream


def footer(path) -> dict:
    return validate_footer(json.loads(pq.ParquetFile(path).metadata.metadata[b"calltrace"]))


@pytest.fixture(scope="module")
def traces(tmp_path_factory):
    """Two real recordings, each converted from one raw stream into JSON
    and Parquet: five threads; and captured arguments (extras in the
    slowest list)."""
    out = {}
    for name, env in [("threads", {}), ("argtypes", {"CALLTRACE_CAPTURE_ARGS": "1"})]:
        tmp = tmp_path_factory.mktemp(name)
        raw = raw_stream(tmp, fixture(name), **env)
        run_cli("convert", raw, "-o", tmp / "t.json", check=True)
        run_cli("convert", raw, "-o", tmp / "t.parquet", check=True)
        out[name] = tmp
    return out


@pytest.mark.parametrize("name", ["threads", "argtypes"])
@pytest.mark.parametrize("args", [["--threads"], ["--threads", "--sort", "calls"], ["--slowest", "1"],
                                  ["--slowest", "7"], ["--slowest", str(index.SLOWEST)],
                                  ["--slowest", str(index.SLOWEST + 1)]])
def test_report_from_index_equals_json(traces, name, args):
    t = traces[name]
    assert cli_stdout("report", *args, t / "t.parquet") == cli_stdout("report", *args, t / "t.json")


def test_index_is_read_and_equals_a_scan(traces):
    for name in ("threads", "argtypes"):
        path = traces[name] / "t.parquet"
        doc = footer(path)
        trace = calltrace.load(str(path))
        assert trace.index is not None and trace.index.limit == index.SLOWEST
        assert len(trace.index.slowest) == min(index.SLOWEST, trace.total_calls)
        for t in trace.threads:
            assert t.calls.table is not None
            read = thread_stats(t)
            t.calls.table = None        # the kernel over the calls instead
            assert read == thread_stats(t)
        read = slowest(trace, index.SLOWEST)
        trace.index = None
        assert read == slowest(trace, index.SLOWEST)
        if name == "argtypes":
            assert any(s.extra and "args" in s.extra for s in read)
        assert sum(len(t) for t in doc["index"]["threads"]) == sum(
            len({r[0] for r in t}) for t in doc["index"]["threads"])


def test_tables_left_out_past_the_limit(traces, tmp_path, monkeypatch):
    """Past MAX_ROWS table rows the writer leaves the tables out, and
    readers scan the calls: the same report."""
    monkeypatch.setattr(index, "MAX_ROWS", 3)
    src = calltrace.load(str(traces["threads"] / "t.json"))
    with open(tmp_path / "t.parquet", "wb") as f:
        columns.write_trace(f, src)
    assert footer(tmp_path / "t.parquet")["index"]["threads"] is None
    assert all(t.calls.table is None for t in calltrace.load(str(tmp_path / "t.parquet")).threads)
    assert cli_stdout("report", "--threads", tmp_path / "t.parquet") == \
        cli_stdout("report", "--threads", traces["threads"] / "t.json")


def _rewrite_footer(src, dst, change) -> None:
    doc = json.loads(pq.ParquetFile(src).metadata.metadata[b"calltrace"])
    change(doc)
    table = pq.read_table(src)
    with pq.ParquetWriter(dst, table.schema) as w:
        w.write_table(table)
        w.add_key_value_metadata({"calltrace": json.dumps(doc)})


@pytest.mark.parametrize("change", [
    lambda d: d["index"]["slowest"]["calls"][0].__setitem__(2, 99),        # no thread 99
    lambda d: d["index"]["slowest"]["calls"][0][4].__setitem__(0, -1),     # no name -1
    lambda d: d["index"]["slowest"].__setitem__("limit", 3),               # kept more than its limit
    lambda d: d["index"]["threads"].pop(),                                  # a table short
    lambda d: d["index"]["threads"][0][0].pop(),                            # a row short
    lambda d: d["index"]["threads"][0][0].__setitem__(1, 10**6),            # counts other calls
    lambda d: d["index"].__setitem__("names", 7)])
def test_malformed_index_is_ignored_with_a_warning(traces, tmp_path, change):
    """The index is derived data: one that does not fit the file is left
    aside with one warning line, and the answers come from the calls."""
    bad = tmp_path / "bad.parquet"
    _rewrite_footer(traces["threads"] / "t.parquet", bad, change)
    for args in (["--threads"], ["--slowest", "5"]):
        p = run_cli("report", *args, bad)
        assert p.returncode == 0
        assert p.stdout.decode() == cli_stdout("report", *args, traces["threads"] / "t.json")
        err = p.stderr.decode()
        assert err.startswith(f"calltrace: warning: {bad}: the footer's index is malformed (")
        assert err.endswith("; computing from the calls instead\n") and err.count("\n") == 1


def test_reports_read_the_index_not_the_calls(traces, tmp_path, monkeypatch):
    """With the column reader out of order, both answers still come: they
    were read from the footer. Past the index's length (and the trace's)
    the calls are read."""
    from calltrace.trace import colsource
    from postmortem_util import leaf, write
    trace = calltrace.load(str(traces["argtypes"] / "t.parquet"))
    assert trace.total_calls < index.SLOWEST
    src = write(tmp_path / "big.json", [(100, None, [("main", 0, 5000, [leaf("f", 10 * i, 10 * i + 5)
                                                                          for i in range(150)])])])
    run_cli("convert", src, "-o", tmp_path / "big.parquet", check=True)
    big = calltrace.load(str(tmp_path / "big.parquet"))
    expected = (slowest(trace, 10), [thread_stats(t) for t in trace.threads], slowest(trace, 1000))

    def no_scan(*_a, **_k):
        raise AssertionError("the calls were read")
    monkeypatch.setattr(colsource, "columns", no_scan)
    assert (slowest(trace, 10), [thread_stats(t) for t in trace.threads], slowest(trace, 1000)) == expected
    assert len(slowest(big, index.SLOWEST)) == index.SLOWEST
    with pytest.raises(AssertionError, match="the calls were read"):
        slowest(big, index.SLOWEST + 1)


def test_ties_idle_thread_and_marks(tmp_path):
    """150 calls of one length over two threads and a thread with none:
    ties go to the earlier call, in the index as in a scan, for every N;
    marked calls (before_attach, call_site) keep their keys in the index."""
    from postmortem_util import leaf, write
    calls = [leaf(f"f{i % 3}", 10 * i, 10 * i + 5) for i in range(150)]
    calls[7] = leaf("f1", 70, 75, before_attach=True)
    calls[9] = leaf("f0", 90, 95, call_site="0x401000")
    other = [leaf("f2", 3 + 10 * i, 8 + 10 * i) for i in range(30)]
    src = write(tmp_path / "t.json", [(100, None, [("main", 0, 5000, calls)]),
                                      (101, "w", [("main", 0, 5000, other)]), (102, "idle", [])])
    run_cli("convert", src, "-o", tmp_path / "t.parquet", check=True)
    footer(tmp_path / "t.parquet")
    a, b = calltrace.load(src), calltrace.load(str(tmp_path / "t.parquet"))
    assert b.index is not None and [len(t.calls) for t in b.threads] == [151, 31, 0]
    for n in (1, 2, 3, 10, 50, 99, 100, 101, 182, 183, 200):
        assert slowest(b, n) == slowest(a, n), n
    marked = {s.extra.get("before_attach") or s.extra.get("call_site") for s in slowest(b, 100) if s.extra}
    assert marked == {True, "0x401000"}
    assert [thread_stats(t) for t in b.threads] == [thread_stats(t) for t in a.threads]


def test_older_file_without_before_attach(traces, tmp_path):
    """A Parquet trace written before the before_attach column (and the
    index) existed: every command reads it, the column as all false."""
    old = tmp_path / "old.parquet"
    doc = json.loads(pq.ParquetFile(traces["argtypes"] / "t.parquet").metadata.metadata[b"calltrace"])
    doc.pop("index")
    table = pq.read_table(traces["argtypes"] / "t.parquet").drop_columns(["before_attach"])
    with pq.ParquetWriter(old, table.schema) as w:
        w.write_table(table)
        w.add_key_value_metadata({"calltrace": json.dumps(doc)})
    json_src = traces["argtypes"] / "t.json"
    for args in (["replay"], ["report", "--slowest", "5"], ["report", "--threads"]):
        assert cli_stdout(*args, old) == cli_stdout(*args, json_src)
    run_cli("convert", old, "-o", tmp_path / "old.json", check=True)
    assert json.loads((tmp_path / "old.json").read_text()) == json.loads(json_src.read_text())
    both = cli_stdout("sql", "--csv", old, traces["argtypes"] / "t.parquet",
                      "SELECT count(*), count(before_attach) FROM calls")
    n = footer(traces["argtypes"] / "t.parquet")["metadata"]["total_calls"]
    assert both.splitlines()[1:] == [f"{2 * n},{n}"]


def test_a_trace_without_index_is_read_by_scanning(traces, tmp_path):
    """An index is optional for readers (a file from another writer)."""
    plain = tmp_path / "plain.parquet"
    _rewrite_footer(traces["argtypes"] / "t.parquet", plain, lambda d: d.pop("index"))
    for args in (["--threads"], ["--slowest", "5"]):
        assert cli_stdout("report", *args, plain) == cli_stdout("report", *args, traces["argtypes"] / "t.json")


def _threads_raw(tmp_path) -> str:
    return raw_stream(tmp_path, fixture("threads"))


def _convert_in_process(raw: str, out) -> None:
    from calltrace.record.convert import convert
    convert(raw, str(out))


def test_measured_tables_equal_a_scan_at_and_past_the_limit(tmp_path, monkeypatch):
    """A raw stream's tables come from the converter's measuring pass, kept
    while they fit MAX_ROWS rows in all: at the limit they are written and
    equal the kernel over the calls; one row past it they are left out."""
    raw = _threads_raw(tmp_path)
    _convert_in_process(raw, tmp_path / "full.parquet")
    rows = sum(len(t) for t in footer(tmp_path / "full.parquet")["index"]["threads"])
    assert rows > 5
    monkeypatch.setattr(index, "MAX_ROWS", rows)
    _convert_in_process(raw, tmp_path / "at.parquet")
    tables = footer(tmp_path / "at.parquet")["index"]["threads"]
    assert tables is not None and sum(len(t) for t in tables) == rows
    trace = calltrace.load(str(tmp_path / "at.parquet"))
    for t in trace.threads:
        read = thread_stats(t)
        t.calls.table = None
        assert read == thread_stats(t)
    monkeypatch.setattr(index, "MAX_ROWS", rows - 1)
    _convert_in_process(raw, tmp_path / "past.parquet")
    assert footer(tmp_path / "past.parquet")["index"]["threads"] is None
    assert cli_stdout("report", "--threads", tmp_path / "past.parquet") == \
        cli_stdout("report", "--threads", tmp_path / "at.parquet")


def test_functions_sharing_a_name_are_tabled_by_name(tmp_path):
    """Two functions (addresses) shown under one name: the index's tables
    are by name, so the writer computes them from the calls rather than
    taking the measuring pass's (by function). Same walk, names merged."""
    from calltrace.record.raw import RawStream
    raw = _threads_raw(tmp_path)
    with RawStream(raw) as r:
        r.keep_tables(index.MAX_ROWS)
        r.analyze()
        funcs = r.functions()
        names = [f"f{i}" for i in range(len(funcs))]
        names[1] = names[0]
        threads = [(t.tid, None, t.main) for t in r.threads()]
        header = columns.header_doc({"total_calls": r.summary().total_calls}, [])
        with open(tmp_path / "t.parquet", "wb") as f:
            columns.write_raw(f, r, header, names, threads, None, r.thread_table)
    doc = json.loads(pq.ParquetFile(tmp_path / "t.parquet").metadata.metadata[b"calltrace"])
    assert doc["index"]["names"] == names[1:]
    scan = [{} for _ in threads]
    calls = pq.read_table(tmp_path / "t.parquet", columns=["thread", "function"]).to_pydict()
    for t, fn in zip(calls["thread"], calls["function"]):
        scan[t][fn] = scan[t].get(fn, 0) + 1
    for t, table in enumerate(doc["index"]["threads"]):
        assert {doc["index"]["names"][row[0]]: row[1] for row in table} == scan[t]
