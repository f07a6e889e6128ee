"""The Chrome Trace Event Format export, checked against the format's field
rules (the JSON object form, "X" complete events, "M" metadata events)."""
from __future__ import annotations

import json
from decimal import Decimal

import calltrace
from conftest import fixture, run_cli
from postmortem_util import write_demo

PHASES = {"B", "E", "X", "i", "I", "C", "b", "n", "e", "s", "t", "f", "P", "O", "N", "D", "M"}


def check_events(doc: dict) -> list[dict]:
    """Assert the Trace Event Format rules; return the X events."""
    assert isinstance(doc, dict) and isinstance(doc["traceEvents"], list)
    assert doc.get("displayTimeUnit", "ms") in ("ms", "ns")
    xs = []
    for ev in doc["traceEvents"]:
        assert ev["ph"] in PHASES, ev
        assert isinstance(ev["name"], str) and ev["name"], ev
        assert type(ev["pid"]) is int and type(ev["tid"]) is int, ev
        if "args" in ev:
            assert isinstance(ev["args"], dict), ev
        if ev["ph"] == "M":
            assert ev["name"] in ("process_name", "thread_name", "process_sort_index", "thread_sort_index")
            assert isinstance(ev["args"]["name"], str)
            continue
        assert ev["ph"] == "X", ev
        assert isinstance(ev["ts"], Decimal) and ev["ts"] >= 0, ev
        assert isinstance(ev["dur"], Decimal) and ev["dur"] >= 0, ev
        assert isinstance(ev.get("cat", ""), str)
        xs.append(ev)
    # complete events on one thread nest: none overlaps its parent partially
    by_tid: dict[int, list] = {}
    for ev in xs:
        by_tid.setdefault(ev["tid"], []).append(ev)
    for evs in by_tid.values():
        stack: list[Decimal] = []
        for ev in sorted(evs, key=lambda e: (e["ts"], -e["dur"])):
            while stack and stack[-1] <= ev["ts"] and not (stack[-1] == ev["ts"] and ev["dur"] == 0):
                stack.pop()
            end = ev["ts"] + ev["dur"]
            assert not stack or end <= stack[-1], ev
            stack.append(end)
    return xs


def export(src, tmp_path, name="out.json") -> dict:
    out = tmp_path / name
    p = run_cli("export", src, "--format", "chrome", "-o", out)
    assert p.returncode == 0, p.stderr.decode()
    assert p.stderr.decode() == f"wrote {out}\n"
    return json.loads(out.read_text(), parse_float=Decimal)


def test_demo_events(tmp_path):
    doc = export(write_demo(tmp_path / "demo.json"), tmp_path)
    xs = check_events(doc)
    assert [(e["tid"], e["name"], str(e["ts"]), str(e["dur"])) for e in xs] == [
        (100, "main", "0.000", "10.000"), (100, "parse", "0.100", "0.500"), (100, "parse", "0.700", "0.300"),
        (100, "compute", "1.500", "7.500"), (100, "fib", "2.000", "0.900"), (100, "fib", "2.100", "0.400"),
        (100, "fib", "2.150", "0.100"), (100, "fib", "2.300", "0.150"), (100, "fib", "2.550", "0.250"),
        (100, "report", "3.000", "5.500"), (101, "work", "1.000", "5.000"), (101, "fib", "1.200", "4.000")]
    assert xs[1]["args"] == {"s": '"a,b"', "return": "2"}
    meta = [(e["tid"], e["name"], e["args"]["name"]) for e in doc["traceEvents"] if e["ph"] == "M"]
    assert meta == [(100, "process_name", "prog"), (100, "thread_name", "main"), (101, "thread_name", "worker-1")]
    assert {e["pid"] for e in doc["traceEvents"]} == {4242}
    assert doc["otherData"]["program"] == "/opt/demo/prog"


def test_real_trace_keeps_every_call_exactly(tmp_path):
    src = tmp_path / "w.json"
    run_cli("run", "-q", "-o", src, fixture("workers"), check=True)
    xs = check_events(export(src, tmp_path))
    trace = calltrace.load(src)
    assert [(e["tid"], e["name"], int(e["ts"] * 1000), int(e["dur"] * 1000)) for e in xs] == [
        (t.tid, c.function, c.start_ns, c.duration_ns) for t in trace.threads for c in t.calls]


def test_default_output_name_and_stdout(tmp_path):
    src = write_demo(tmp_path / "demo.json")
    run_cli("export", src, "-f", "chrome", check=True)
    assert (tmp_path / "demo.chrome.json").exists()
    p = run_cli("export", src, "-f", "chrome", "-o", "-", check=True)
    assert check_events(json.loads(p.stdout, parse_float=Decimal))[0]["name"] == "main"
    p = run_cli("export", src, "-f", "chrome", "-o", src)
    assert (p.returncode, p.stderr.decode()) == (2, f"calltrace: error: {src}: would overwrite the trace itself\n")
    p = run_cli("export", src, "-f", "chrome", "-o", tmp_path / "no" / "such" / "x.json")
    assert p.returncode == 2 and p.stderr.decode().startswith("calltrace: error: cannot write ")
