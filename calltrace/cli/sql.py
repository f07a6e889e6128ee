"""``calltrace sql``: SQL over one or many traces with embedded DuckDB."""
from __future__ import annotations

import csv
import json
import os
import shutil
import signal
import sys

from ..errors import CalltraceError
from ..files import locked_scratch
from ..trace import dataset

NAME = "sql"
HELP = "run a SQL query (DuckDB) over one or many traces, JSON or Parquet"
DESCRIPTION = """Run a SQL query over traces with embedded DuckDB. The traces (files, or
folders of them such as a dataset written by `calltrace run -o DIR/`) are
seen as these views:

  calls      one row per call: trace, host, pid, thread, tid, call, parent,
             depth, function, start_ns, duration_ns, incomplete, unwound,
             before_attach, call_site, args, args_note, return
             (docs/FORMAT.md, "Parquet")
  functions  each trace's function table: trace, host, pid, function, calls,
             total_ns, self_ns, min_ns, max_ns, module, file, line, address
  threads    trace, host, pid, thread, tid, name, main, calls
  traces     one row per trace: trace, host, pid, program, total_calls, ...

`parent` is the caller's `call` in the same trace. JSON traces are first
converted to Parquet in a temporary folder; Parquet is read in place.

examples:
  calltrace sql t.parquet "SELECT function, count(*) n, sum(duration_ns) FROM calls GROUP BY 1 ORDER BY 2 DESC LIMIT 10"
  calltrace sql runs/ "SELECT pid, count(*) FROM calls GROUP BY pid"
  calltrace sql --csv t.parquet "SELECT * FROM functions" > functions.csv"""


def add_arguments(p) -> None:
    p.add_argument("trace", nargs="+", metavar="TRACE", help="trace files or folders of traces")
    p.add_argument("query", metavar="QUERY", help="the SQL query (DuckDB dialect)")
    g = p.add_mutually_exclusive_group()
    g.add_argument("--csv", action="store_true", help="print CSV with a header line")
    g.add_argument("--json", action="store_true", help="print a JSON array of objects")


def _duckdb():
    try:
        import duckdb
    except ImportError:
        raise CalltraceError("calltrace sql needs DuckDB: pip install 'calltrace[sql]' "
                             "(or pip install duckdb)") from None
    return duckdb


def _quote(s: str) -> str:
    return "'" + s.replace("'", "''") + "'"


def connect(paths: list[str], scratch: str):
    """A DuckDB connection with the calls/functions/threads/traces views."""
    import pyarrow as pa
    from ..trace import parquet
    from ..record.convert import transcode
    duckdb = _duckdb()
    files = dataset.expand(paths)
    pq_files, others = dataset.split(files)
    for i, p in enumerate(others):
        out = os.path.join(scratch, f"{i}.parquet")
        transcode(p, out, None)
        pq_files.append(out)
    named = {out: p for out, p in zip(pq_files[len(pq_files) - len(others):], others)}
    traces, functions, threads, parts = [], [], [], []
    for f in pq_files:
        name = named.get(f, f)
        doc = parquet.header(f)
        md = doc["metadata"]
        host, pid = md.get("hostname") or "", md.get("pid")
        row = {"trace": name, "host": host, "pid": pid}
        row.update({k: v for k, v in md.items() if isinstance(v, (str, int, float, bool)) or v is None})
        row["argv"] = json.dumps(md.get("argv") or [])
        traces.append(row)
        for fn in doc["functions"]:
            functions.append({"trace": name, "host": host, "pid": pid, "function": fn["function"],
                              "calls": fn["calls"], "total_ns": fn["total_ns"], "self_ns": fn["self_ns"],
                              "min_ns": fn["min_ns"], "max_ns": fn["max_ns"], "module": fn.get("module"),
                              "file": fn.get("file"), "line": fn.get("line"), "address": fn.get("address")})
        for i, t in enumerate(doc["threads"]):
            threads.append({"trace": name, "host": host, "pid": pid, "thread": i, "tid": t["tid"],
                            "name": t.get("name"), "main": t.get("main", False), "calls": t["calls"]})
        parts.append(f"SELECT {_quote(name)} AS trace, {_quote(host)} AS host, "
                     f"{int(pid or 0)}::BIGINT AS pid, * FROM read_parquet({_quote(f)}, hive_partitioning=false)")
    con = duckdb.connect()
    keys = sorted({k for r in traces for k in r}, key=lambda k: (k not in ("trace", "host", "pid"), k))
    tables = {"traces": pa.Table.from_pylist([{k: r.get(k) for k in keys} for r in traces]),
              "functions": _table(functions, ["trace", "host", "pid", "function", "calls", "total_ns",
                                              "self_ns", "min_ns", "max_ns", "module", "file", "line",
                                              "address"]),
              "threads": _table(threads, ["trace", "host", "pid", "thread", "tid", "name", "main", "calls"])}
    for name, t in tables.items():
        con.register(f"_{name}", t)
        con.execute(f"CREATE VIEW {name} AS SELECT * FROM _{name}")
    # By name: a trace written before a column was added lacks it (null there).
    con.execute("CREATE VIEW calls AS " + " UNION ALL BY NAME ".join(parts))
    return con


def _table(rows: list[dict], columns: list[str]):
    import pyarrow as pa
    if rows:
        return pa.Table.from_pylist(rows)
    return pa.table({c: pa.array([], pa.string()) for c in columns})


def _cell(v) -> str:
    if v is None:
        return "NULL"
    if isinstance(v, bool):
        return "true" if v else "false"
    return str(v)


def run(args) -> int:
    duckdb = _duckdb()
    # SIGTERM and SIGKILL end `sql` inside DuckDB, before any cleanup: the
    # folder they leave is removed by the next `sql`.
    scratch, lock = locked_scratch("calltrace-sql-")
    try:
        con = connect(args.trace, scratch)
        cur = _execute(duckdb, con, args.query)
        if cur is None:     # DuckDB's answer to "", ";" or only a comment
            raise CalltraceError("the query has no SQL statement in it")
        if cur.description is None:
            return 0
        header = [d[0] for d in cur.description]
        out = sys.stdout
        if args.csv:
            w = csv.writer(out, lineterminator="\n")
            w.writerow(header)
            while rows := cur.fetchmany(10_000):
                w.writerows(rows)
        elif args.json:
            out.write("[")
            first = True
            while rows := cur.fetchmany(10_000):
                for r in rows:
                    out.write(("" if first else ",") + "\n" + json.dumps(dict(zip(header, r)), default=str,
                                                                            ensure_ascii=False))
                    first = False
            out.write("\n]\n")
        else:
            rows = cur.fetchall()
            text = [[_cell(v) for v in r] for r in rows]
            numeric = [bool(rows) and all(r[i] is None or (isinstance(r[i], (int, float))
                                              and not isinstance(r[i], bool)) for r in rows)
                       for i in range(len(header))]
            lines = _mixed(header, text, numeric)
            out.write("\n".join(lines) + "\n")
            out.write(f"({len(rows)} row{'s' if len(rows) != 1 else ''})\n")
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
        os.close(lock)
    return 0


def _execute(duckdb, con, query: str):
    """con.execute(query), stopped by Ctrl-C as any command is. DuckDB
    turns the KeyboardInterrupt into RuntimeError("Query interrupted"), or
    while it plans (reading our Arrow views) swallows it and runs on: the
    handler notes the signal and interrupts DuckDB itself."""
    hit = []

    def note(sig, frame):
        hit.append(sig)
        con.interrupt()
        signal.default_int_handler(sig, frame)
    # Only over Python's default: an ignored SIGINT (nohup, `&`) stays ignored.
    ours = signal.getsignal(signal.SIGINT) is signal.default_int_handler
    if ours:
        signal.signal(signal.SIGINT, note)
    try:
        return con.execute(query)
    except Exception as e:
        if hit:
            raise KeyboardInterrupt from None
        if isinstance(e, duckdb.Error):
            raise CalltraceError(f"SQL: {str(e).splitlines()[0]}") from None
        raise
    finally:
        if ours:
            signal.signal(signal.SIGINT, signal.default_int_handler)


def _mixed(header, rows, numeric) -> list[str]:
    widths = [max([len(h)] + [len(r[i]) for r in rows]) for i, h in enumerate(header)]

    def line(cells):
        return "  ".join(c.rjust(widths[i]) if numeric[i] else c.ljust(widths[i])
                         for i, c in enumerate(cells)).rstrip()
    return [line(header), "  ".join("-" * w for w in widths)] + [line(r) for r in rows]
