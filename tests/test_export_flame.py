"""folded, svg, speedscope and html through their native kernels (call
tree, events, timeline rows): checked against values computed here from the
JSON calls, across batch boundaries, threads, a 2500-deep recursion and
names first met in later batches."""
from __future__ import annotations

import io
import json
import re

import pytest

from calltrace.analysis.render import fmt_call
from calltrace.export import Options, module
from calltrace.trace import colsource, events, reader
from calltrace.trace import parquet as parquet_reader
from calltrace.trace.model import Call, FunctionStats, Thread, Trace
from calltrace.trace.parts import load_any
from conftest import fixture, load_json, run_cli
from postmortem_util import drop_excluded


def export(trace, fmt: str, **opts) -> str:
    out = io.BytesIO() if fmt == "parquet" else io.StringIO()
    module(fmt).write(trace, out, Options(**opts))
    return out.getvalue()


def tree(doc: dict) -> dict[tuple, list[int]]:
    """call path -> [calls, total_ns], all threads merged."""
    paths: dict[tuple, list[int]] = {}
    for t in doc["threads"]:
        stack: list[str] = []
        for c in t["calls"]:
            del stack[c["depth"]:]
            stack.append(c["function"])
            p = paths.setdefault(tuple(stack), [0, 0])
            p[0] += 1
            p[1] += c["duration_ns"]
    return paths


def folded(doc: dict) -> str:
    paths = tree(doc)
    lines = []
    for path in sorted(paths):
        kids = sum(v[1] for p, v in paths.items() if len(p) == len(path) + 1 and p[:-1] == path)
        self_ns = paths[path][1] - kids
        if self_ns > 0:
            lines.append(";".join(f.replace(";", ":") for f in path) + f" {self_ns}\n")
    return "".join(lines)


def speedscope(doc: dict) -> list[list[tuple]]:
    """Per thread, (O/C, name, at): opens at the start, closes at the end,
    clamped so that time never steps back."""
    out = []
    for t in doc["threads"]:
        last, stack, evs = None, [], []
        for c in t["calls"]:
            while len(stack) > c["depth"]:
                fn, end = stack.pop()
                last = max(end, last)
                evs.append(("C", fn, last))
            at = c["start_ns"] if last is None else max(c["start_ns"], last)
            evs.append(("O", c["function"], at))
            last = at
            stack.append((c["function"], max(at, c["start_ns"] + c["duration_ns"])))
        while stack:
            fn, end = stack.pop()
            last = max(end, last)
            evs.append(("C", fn, last))
        out.append(evs)
    return out


def speedscope_events(text: str) -> list[list[tuple]]:
    doc = json.loads(text)
    frames = [f["name"] for f in doc["shared"]["frames"]]
    return [[(e["type"], frames[e["frame"]], e["at"]) for e in p["events"]] for p in doc["profiles"]]


def html_data(text: str) -> dict:
    m = re.search(r'<script id="data" type="application/json">(.*?)</script>', text, re.S)
    return json.loads(m.group(1))


def html_rows(data: dict) -> list[list[tuple]]:
    names = [f[0] for f in data["functions"]]
    out = []
    for t in data["threads"]:
        c = t["calls"]
        out.append([(names[c[i]], c[i + 1], c[i + 2], c[i + 3]) for i in range(0, len(c), 4)])
    return out


def kept(doc: dict, max_calls: int) -> tuple[int, int, list[list[tuple]]]:
    """html's budget from the durations' bit lengths: (floor, full, rows kept)."""
    durs = [c["duration_ns"] for t in doc["threads"] for c in t["calls"]]
    full = floor = n = 0
    for bits in range(64, -1, -1):
        n += sum(d.bit_length() == bits for d in durs)
        if n > max_calls:
            full, floor = 1 << bits, (1 << (bits - 1) if bits else 0)
            break
    quota = max_calls - sum(d >= full for d in durs)
    rows = []
    for t in doc["threads"]:
        rows.append([])
        for c in t["calls"]:
            d = c["duration_ns"]
            if d < full:
                if d < floor or quota <= 0:
                    continue
                quota -= 1
            rows[-1].append((c["function"], c["depth"], c["start_ns"], d))
    return floor, full, rows


@pytest.mark.parametrize("program", [["workers"], ["deep", "2500"], ["threads"]])
def test_many_small_batches(tmp_path, monkeypatch, program):
    """Parquet read 7 calls at a time, JSON in blocks of a few lines, and
    output buffers of a few events: the kernels' open paths, clocks and
    budgets cross hundreds of batch boundaries; both encodings give the
    same bytes, and the values computed here from the JSON calls."""
    out = tmp_path / "t.json"
    run_cli("run", "-q", "-o", out, fixture(program[0]), *program[1:], check=True)
    run_cli("export", out, "-f", "parquet", "-o", tmp_path / "t.parquet", check=True)
    doc = load_json(out)
    total = doc["metadata"]["total_calls"]
    monkeypatch.setattr(parquet_reader, "READ_BATCH", 7)
    monkeypatch.setattr(reader, "CHUNK", 4096)
    monkeypatch.setattr(events.Events, "BUFFER", 1)
    results = []
    for path in (tmp_path / "t.parquet", out):
        trace = load_any([str(path)])
        batches = sum(1 for t in trace.threads for _ in colsource.columns(t, colsource.Names()))
        assert batches >= total // 100
        results.append({fmt: export(trace, fmt, max_calls=max(1, total // 3))
                        for fmt in ("folded", "svg", "speedscope", "html")})
    assert results[0] == results[1]
    got = results[0]
    assert got["folded"] == folded(doc)
    assert speedscope_events(got["speedscope"]) == speedscope(doc)
    data = html_data(got["html"])
    floor, full, rows = kept(doc, max(1, total // 3))
    assert (data["floor"], data["full"], data["shown"]) == (floor, full, max(1, total // 3))
    assert html_rows(data) == rows
    paths = tree(doc)
    boxes = re.findall(r"<title>(.*?) \((\d+) calls, total", got["svg"])
    assert len(boxes) <= len(paths)
    if program[0] == "deep":
        assert max(map(len, paths)) == 2501
        assert len(got["folded"].splitlines()[-1].split(";")) >= 2500


def test_names_first_met_in_later_batches(monkeypatch, tmp_path):
    """Batches of 2 calls and a function table naming only main: the other
    names get frames and table rows in the order first written; a child that
    outlasts its parent is clamped; calls with optional keys (arguments, a
    call site) are described by Python in html, from either encoding."""
    monkeypatch.setattr(colsource, "BATCH", 2)
    monkeypatch.setattr(parquet_reader, "READ_BATCH", 2)
    monkeypatch.setattr(events.Events, "BUFFER", 1)
    b = "b;" * 1500
    arg = [{"name": "x", "type": "int", "value": 7}]
    one = [Call("main", 0, 100, 1000), Call("a", 1, 110, 50), Call("a", 1, 200, 50, call_site="0x10"),
           Call(b, 1, 300, 900), Call("c", 0, 1150, 10)]
    two = [Call("c", 0, 0, 5), Call(b, 0, 10, 5), Call("a", 1, 12, 1, args=arg)]
    trace = Trace({"pid": 7, "program": "/bin/p", "total_calls": 8}, [FunctionStats("main", 1)],
                  [Thread(70, one, main=True), Thread(71, two, "w")])
    (tmp_path / "t.parquet").write_bytes(export(trace, "parquet"))
    for t in (trace, load_any([str(tmp_path / "t.parquet")])):
        doc = json.loads(export(t, "speedscope"))
        assert [f["name"] for f in doc["shared"]["frames"]] == ["main", "a", b, "c"]
        assert speedscope_events(export(t, "speedscope"))[0] == [
            ("O", "main", 100), ("O", "a", 110), ("C", "a", 160), ("O", "a", 200), ("C", "a", 250),
            ("O", b, 300), ("C", b, 1200), ("C", "main", 1200), ("O", "c", 1200), ("C", "c", 1200)]
        bb = b.replace(";", ":")
        assert export(t, "folded") == f"{bb} 4\n{bb};a 1\nc 15\nmain;a 100\nmain;{bb} 900\n"
        data = html_data(export(t, "html"))
        assert [f[0] for f in data["functions"]] == ["main", "a", b, "c"]
        assert [th["calls"] for th in data["threads"]] == [
            [0, 0, 100, 1000, 1, 1, 110, 50, 1, 1, 200, 50, 2, 1, 300, 900, 3, 0, 1150, 10],
            [3, 0, 0, 5, 2, 0, 10, 5, 1, 1, 12, 1]]
        assert [th["extra"] for th in data["threads"]] == [{"2": "a"}, {"2": fmt_call("a", {"args": arg})}]


def test_selection(tmp_path):
    """-N and -D in the tree and event kernels: the calls kept are those
    computed here, at the depth they are shown at; speedscope's size guard
    counts exactly those calls."""
    out = tmp_path / "t.json"
    run_cli("run", "-q", "-o", out, fixture("threads"), check=True)
    doc = load_json(out)
    assert drop_excluded(doc, "step", 2)
    for fmt in ("folded", "speedscope"):
        run_cli("export", out, "-f", fmt, "-N", "^step$", "-D", "2", "-o", tmp_path / f"s.{fmt}", check=True)
    assert (tmp_path / "s.folded").read_text() == folded(doc)
    assert speedscope_events((tmp_path / "s.speedscope").read_text()) == speedscope(doc)
    kept = sum(len(t["calls"]) for t in doc["threads"])
    sel = ("-N", "^step$", "-D", "2")
    run_cli("export", out, "-f", "speedscope", *sel, "--max-events", str(kept), "-o", tmp_path / "k.json", check=True)
    p = run_cli("export", out, "-f", "speedscope", *sel, "--max-events", str(kept - 1), "-o", tmp_path / "no.json")
    assert p.returncode == 2
    assert p.stderr.decode() == (f"calltrace: error: {out}: more than {kept - 1:,} calls to export; narrow it "
                                 "with -F/-N/-t/--tid or raise --max-events (nothing written)\n")
    assert not (tmp_path / "no.json").exists()
