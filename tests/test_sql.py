"""`calltrace sql`: DuckDB over one or many traces in either encoding."""
from __future__ import annotations

import csv
import io
import json

import calltrace

from conftest import fixture, load_json, run_cli
from postmortem_util import cli_stdout, write_demo


def test_counts_equal_functions_table(tmp_path):
    out = tmp_path / "t.json"
    run_cli("run", "-q", "-o", out, fixture("recursion"), check=True)
    doc = load_json(out)
    text = cli_stdout("sql", "--csv", out, "SELECT function, count(*) AS n, min(duration_ns) AS lo, "
                      "max(duration_ns) AS hi FROM calls GROUP BY 1 ORDER BY 1")
    got = {r["function"]: (int(r["n"]), int(r["lo"]), int(r["hi"]))
           for r in csv.DictReader(io.StringIO(text))}
    assert got == {f["function"]: (f["calls"], f["min_ns"], f["max_ns"]) for f in doc["functions"]}


def test_many_traces_both_encodings(tmp_path):
    a = write_demo(tmp_path / "a.json")
    run_cli("convert", a, "-o", tmp_path / "b.parquet", check=True)
    text = cli_stdout("sql", "--json", a, tmp_path / "b.parquet",
                      "SELECT trace, count(*) AS n, sum(duration_ns) AS t FROM calls GROUP BY 1 ORDER BY 1")
    total = sum(c["duration_ns"] for t in load_json(a)["threads"] for c in t["calls"])
    assert json.loads(text) == [{"trace": a, "n": 12, "t": total},
                                {"trace": str(tmp_path / "b.parquet"), "n": 12, "t": total}]


def test_table_output_and_views(tmp_path):
    a = write_demo(tmp_path / "a.json")
    text = cli_stdout("sql", a, "SELECT tid, name, main, calls FROM threads ORDER BY tid")
    assert text == ("tid  name      main   calls\n"
                    "---  --------  -----  -----\n"
                    "100  NULL      true      10\n"
                    "101  worker-1  false      2\n"
                    "(2 rows)\n")
    # callers of a function, through the parent column
    text = cli_stdout("sql", "--csv", a, "SELECT p.function AS caller, count(*) AS n FROM calls c "
                      "JOIN calls p ON p.trace = c.trace AND p.call = c.parent "
                      "WHERE c.function = 'fib' GROUP BY 1 ORDER BY 1")
    assert text == "caller,n\ncompute,1\nfib,4\nwork,1\n"
    assert cli_stdout("sql", "--csv", a, "SELECT program, total_calls FROM traces") == \
        "program,total_calls\n/opt/demo/prog,12\n"


def test_bad_query_is_one_line(tmp_path):
    a = write_demo(tmp_path / "a.json")
    p = run_cli("sql", a, "SELECT nope FROM calls")
    assert p.returncode == 2
    err = p.stderr.decode()
    assert err.startswith("calltrace: error: SQL: Binder Error: ") and err.count("\n") == 1


def test_missing_duckdb_is_one_line(tmp_path):
    a = write_demo(tmp_path / "a.json")
    shim = tmp_path / "shim"
    shim.mkdir()
    (shim / "duckdb.py").write_text("raise ImportError('no duckdb here')\n")
    p = run_cli("sql", a, "SELECT 1", env={"PYTHONPATH": str(shim)})
    assert p.returncode == 2
    assert p.stderr.decode() == ("calltrace: error: calltrace sql needs DuckDB: pip install "
                                 "'calltrace[sql]' (or pip install duckdb)\n")


def _readme_queries() -> list[str]:
    """The three queries the README shows, as written there."""
    from conftest import ROOT
    text = (ROOT / "README.md").read_text()
    return [q.strip() for q in text.split('calltrace sql trace.parquet "')[1:4]
            for q in [q.split('"\n', 1)[0]]]


def test_readme_queries(tmp_path):
    """Checked against calltrace's own function table and slowest calls,
    which the converter computes in C from the raw events."""
    out = tmp_path / "trace.parquet"
    run_cli("run", "-q", "-o", out, fixture("recursion"), check=True)
    hot, slow, callers = _readme_queries()
    rows = list(csv.DictReader(io.StringIO(cli_stdout("sql", "--csv", out, hot))))
    doc = calltrace.load(out)
    assert {r["function"]: (int(r["calls"]), int(r["self_ns"])) for r in rows} == \
        {f.function: (f.calls, f.self_ns) for f in doc.functions}
    rows = list(csv.DictReader(io.StringIO(cli_stdout("sql", "--csv", out, slow))))
    from calltrace.analysis.stats import slowest
    want = slowest(doc, 5)
    assert [(int(r["duration_ns"]), r["path"]) for r in rows] == \
        [(s.duration_ns, " > ".join(s.path)) for s in want]
    rows = list(csv.DictReader(io.StringIO(cli_stdout("sql", "--csv", out, callers))))
    fib = [c for c in doc.threads[0].calls if c.function == "fib"]
    assert sum(int(r["calls"]) for r in rows) == len(fib) == 15
    assert {r["caller"] for r in rows} == {"main", "fib"}
