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
    lambda d: d["index"]["threads"].pop(),                                  # a table short
    lambda d: d["index"].__setitem__("names", 7)])
def test_malformed_index_is_one_line(traces, tmp_path, change):
    bad = tmp_path / "bad.parquet"
    _rewrite_footer(traces["threads"] / "t.parquet", bad, change)
    p = run_cli("report", "--threads", bad)
    assert p.returncode == 2 and p.stdout == b""
    err = p.stderr.decode()
    assert err.startswith(f"calltrace: error: {bad}: malformed index in the Parquet footer (")
    assert err.count("\n") == 1


def test_a_trace_without_index_is_read_by_scanning(traces, tmp_path):
    """An index is optional for readers (a file from another writer)."""
    plain = tmp_path / "plain.parquet"
    _rewrite_footer(traces["argtypes"] / "t.parquet", plain, lambda d: d.pop("index"))
    for args in (["--threads"], ["--slowest", "5"]):
        assert cli_stdout("report", *args, plain) == cli_stdout("report", *args, traces["argtypes"] / "t.json")
