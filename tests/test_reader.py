"""calltrace.load: the streaming fast path, the whole-JSON fallback, bad and
truncated files. Traces are written by the project's own writer, or
recorded from fixtures with `calltrace run`."""
from __future__ import annotations

import json
import tracemalloc

import pytest

import calltrace
from calltrace.trace import colsource
from calltrace.trace.builder import TraceBuilder
from calltrace.trace.writer import write_trace
from conftest import fixture, run_cli
from postmortem_util import build, build_random, demo_threads, leaf, metadata, write, write_demo

# (tid, [(depth, function, start, duration)]) of demo_threads()
DEMO = [(100, [(0, "main", 0, 10000), (1, "parse", 100, 500), (1, "parse", 700, 300),
               (1, "compute", 1500, 7500), (2, "fib", 2000, 900), (3, "fib", 2100, 400),
               (4, "fib", 2150, 100), (4, "fib", 2300, 150), (3, "fib", 2550, 250),
               (2, "report", 3000, 5500)]),
        (101, [(0, "work", 1000, 5000), (1, "fib", 1200, 4000)])]


def summary(trace):
    return [(t.tid, [(c.depth, c.function, c.start_ns, c.duration_ns) for c in t.calls])
            for t in trace.threads]


def column_rows(trace) -> list[list[tuple]]:
    """Each thread's calls as the column batches give them (the native line
    parser for the canonical layout), back as rows."""
    out = []
    for t in trace.threads:
        names, rows = colsource.Names(), []
        for c in colsource.columns(t, names):
            rows.extend((names.names[f], d, s, u, c.extra(i) or None) for i, (f, d, s, u) in
                        enumerate(zip(c.func.tolist(), c.depth.tolist(), c.start.tolist(), c.dur.tolist())))
        out.append(rows)
    return out


def expected_calls():
    b = build(demo_threads())
    return {t.tid: [c.to_json() for c in t.calls] for t in b.threads.values()}


@pytest.mark.parametrize("pretty", [False, True])
def test_canonical_layout_streams(tmp_path, pretty):
    trace = calltrace.load(write_demo(tmp_path / "t.json", pretty=pretty))
    assert summary(trace) == DEMO
    assert [(t.tid, t.name, t.main, len(t.calls)) for t in trace.threads] == [
        (100, None, True, 10), (101, "worker-1", False, 2)]
    assert type(trace.threads[0].calls).__name__ == "CallList"   # not read into memory
    parse = list(trace.threads[0].calls)[1]
    assert parse.args == [{"name": "s", "type": "const char *", "value": "a,b"}]
    assert parse.ret == {"type": "int", "value": 2}
    assert [f.function for f in trace.functions] == ["report", "fib", "main", "compute", "work", "parse"]
    assert (trace.functions[1].calls, trace.functions[1].total_ns, trace.functions[1].self_ns) == (6, 4900, 4900)
    assert not trace.truncated and trace.warnings == []
    # iterating twice reads the file twice, with the same result
    assert summary(trace) == DEMO
    assert [(t.tid, c.function) for t, c in trace.iter_calls()][:2] == [(100, "main"), (100, "parse")]


def test_rows_match_calls(tmp_path):
    trace = calltrace.load(write_demo(tmp_path / "t.json"))
    rows = list(trace.threads[0].rows())
    assert rows[1] == ("parse", 1, 100, 500, {"args": [{"name": "s", "type": "const char *", "value": "a,b"}],
                                              "return": {"type": "int", "value": 2}})
    assert rows[0] == ("main", 0, 0, 10000, None)
    assert [calltrace.Call.from_row(r).to_json() for r in rows] == expected_calls()[100]


@pytest.mark.parametrize("layout", ["indent4-sorted", "one-line", "reordered-call-keys", "crlf"])
def test_other_json_layouts_fall_back(tmp_path, layout):
    doc = json.loads((tmp_path / "x").write_text("") or open(write_demo(tmp_path / "t.json")).read())
    out = tmp_path / "other.json"
    if layout == "indent4-sorted":
        out.write_text(json.dumps(doc, indent=4, sort_keys=True))
    elif layout == "one-line":
        out.write_text(json.dumps(doc))
    elif layout == "crlf":
        out.write_bytes(open(tmp_path / "t.json", "rb").read().replace(b"\n", b"\r\n"))
    else:
        # canonical lines, but each call's keys in another order: the line
        # parser's slow path
        text = open(tmp_path / "t.json").read()
        out.write_text(text.replace('{"function":"work","depth":0,', '{"depth":0,"function":"work",'))
    trace = calltrace.load(out)
    assert summary(trace) == DEMO
    assert trace.threads[1].name == "worker-1"
    assert not trace.truncated
    assert list(trace.threads[0].calls)[1].ret == {"type": "int", "value": 2}
    assert column_rows(trace) == [list(t.rows()) for t in trace.threads]


def test_hostile_names_and_values(tmp_path):
    """Strings holding the layout's own markers must not confuse the fast path."""
    names = ['op"quote\\', "a]}", '{"tid":1', "</script><b>x", "naïve ☃", "x\ny"]
    roots = [leaf(n, i * 10, i * 10 + 5, args=[{"name": "s", "type": "const char *", "value": n + "]}"}])
             for i, n in enumerate(names)]
    roots.append(leaf("tail", 100, 120, args=[{"name": "st", "type": "struct s", "value": {"tid": 3}}]))
    trace = calltrace.load(write(tmp_path / "h.json", [(7, "t", roots), (8, None, [leaf("other", 1, 2)])]))
    calls = list(trace.threads[0].calls)
    assert [c.function for c in calls] == names + ["tail"]
    assert [c.args[0]["value"] for c in calls] == [n + "]}" for n in names] + [{"tid": 3}]
    assert [(t.tid, len(t.calls)) for t in trace.threads] == [(7, 7), (8, 1)]
    assert column_rows(trace) == [list(t.rows()) for t in trace.threads]
    assert column_rows(trace)[0][0][0] == names[0]


def test_empty_threads_and_no_threads(tmp_path):
    b = TraceBuilder()
    b.thread(1, "idle", main=True)
    b.enter(2, "f", 5)
    b.exit(2, 9)
    b.thread(3, "also-idle")
    write_trace(str(tmp_path / "e.json"), metadata(b), b.functions(), list(b.threads.values()))
    trace = calltrace.load(tmp_path / "e.json")
    assert [(t.tid, t.name, [c.function for c in t.calls]) for t in trace.threads] == [
        (1, "idle", []), (2, None, ["f"]), (3, "also-idle", [])]
    empty = TraceBuilder()
    write_trace(str(tmp_path / "n.json"), metadata(empty), [], [])
    trace = calltrace.load(tmp_path / "n.json")
    assert (trace.threads, trace.functions, trace.truncated, trace.warnings) == ([], [], False, [])


@pytest.mark.parametrize("pretty", [False, True])
def test_every_truncation_point(tmp_path, pretty):
    """Cut the file after every byte: either a clear error, or the calls
    before the cut (a prefix of each thread's calls, never a wrong one)."""
    data = open(write_demo(tmp_path / "t.json", pretty=pretty), "rb").read()
    full = dict(DEMO)
    body = data.index(b'"threads"')
    functions_end = data.index(b"],\n", data.index(b'"functions"'))
    cut_file = tmp_path / "cut.json"
    for n in range(len(data)):
        cut_file.write_bytes(data[:n])
        try:
            trace = calltrace.load(cut_file)
        except calltrace.TraceFormatError as e:
            msg = str(e)
            assert "\n" not in msg and msg.startswith(str(cut_file)), msg
            assert ("empty file" in msg) if n == 0 else ("truncated trace" in msg), msg
            # once the metadata is whole, the function table and calls are readable
            assert n < data.index(b'"functions"'), msg
            continue
        if not data[n:].strip():   # only the final newline is missing
            assert not trace.truncated and summary(trace) == DEMO
            continue
        assert trace.truncated, n
        assert trace.warnings and trace.warnings[0].startswith("truncated trace"), n
        if n > body:
            assert len(trace.functions) == 6
        elif n > functions_end:
            assert len(trace.functions) == 6
        for t in trace.threads:
            got = [(c.depth, c.function, c.start_ns, c.duration_ns) for c in t.calls]
            assert got == full[t.tid][:len(got)], n
    # the last complete call line survives a cut inside the next one
    if pretty:
        return
    last = data.rindex(b'{"function":"work"')
    cut_file.write_bytes(data[:last + 10])
    trace = calltrace.load(cut_file)
    assert [[c.function for c in t.calls] for t in trace.threads] == [
        [c[1] for c in DEMO[0][1]], []]


@pytest.mark.parametrize("content, message", [
    (None, "no such file"),
    ("", "empty file, not a calltrace trace"),
    ("hello", "not JSON (JSONDecodeError: Expecting value: line 1 column 1 (char 0))"),
    ("[1, 2]", 'not a calltrace trace (no "format": "calltrace")'),
    ('{"format": "other"}', 'not a calltrace trace (no "format": "calltrace")'),
    ('{"format": "calltrace", "version": 2}', "unsupported trace version 2"),
    ('{"format": "calltrace", "version": 1, "metadata": {}, "functions": [], "threads": []}',
     "malformed trace (missing or wrong field 'total_calls')"),
    ('{\n"format":"calltrace",\n"version":1,\n"metadata":{"total_calls":1},\n"functions":[\n{"function":"f"}\n],\n'
     '"threads":[\n]\n}\n', "malformed trace (missing or wrong field 'calls')"),
])
def test_bad_files(tmp_path, content, message):
    path = tmp_path / "bad.json"
    if content is not None:
        path.write_text(content)
    with pytest.raises(calltrace.TraceFormatError) as e:
        calltrace.load(path)
    assert str(e.value) == f"{path}: {message}"


def test_directory_is_not_a_trace(tmp_path):
    with pytest.raises(calltrace.TraceFormatError) as e:
        calltrace.load(tmp_path)
    assert str(e.value) == f"{tmp_path}: is a directory, not a trace"


def test_malformed_call_line_is_reported_when_read(tmp_path):
    text = open(write_demo(tmp_path / "t.json")).read()
    bad = tmp_path / "bad.json"
    bad.write_text(text.replace('{"function":"compute","depth":1,', '{"function":"compute","depth":"x",'))
    trace = calltrace.load(bad)
    with pytest.raises(calltrace.TraceFormatError) as e:
        list(trace.threads[0].calls)
    assert str(e.value).startswith(f"{bad}: malformed call near byte ")


def test_memory_stays_bounded(tmp_path):
    """Iterating 300,000 calls must not hold them: peak Python allocation
    stays far below what the calls would take (about 100 MB as objects)."""
    b = TraceBuilder()
    t = 0
    for i in range(100_000):
        b.enter(1, "outer", t)
        b.enter(1, "inner", t + 1)
        b.exit(1, t + 2)
        b.enter(1, "inner", t + 3)
        b.exit(1, t + 4)
        b.exit(1, t + 5)
        t += 6
    b.finish()
    path = tmp_path / "big.json"
    write_trace(str(path), metadata(b), b.functions(), list(b.threads.values()))
    del b
    tracemalloc.start()
    trace = calltrace.load(path)
    n = total = 0
    for thread in trace.threads:
        for c in thread.calls:
            n += 1
            total += c.duration_ns
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert (n, total) == (300_000, 100_000 * 7)
    assert peak < 30 << 20, f"peak {peak >> 20} MB"


def test_reads_real_multithread_trace(tmp_path):
    out = tmp_path / "w.json"
    run_cli("run", "-q", "-o", out, fixture("workers"), check=True)
    trace = calltrace.load(out)
    doc = json.loads(out.read_text())
    assert [(t.tid, t.name, t.main, [c.to_json() for c in t.calls]) for t in trace.threads] == [
        (t["tid"], t["name"], t["main"], t["calls"]) for t in doc["threads"]]
    assert sorted(len(t.calls) for t in trace.threads) == [3, 4, 5, 5]


# Random call trees: each thread a sequence of enter (name) / exit steps at
# increasing times; names drawn from a set that includes hostile strings.
from hypothesis import given, settings, HealthCheck, strategies as st  # noqa: E402

NAMES = st.sampled_from(["f", "g", "main", 'q"x', "a]}", "<s>", "ü"])
STEPS = st.lists(st.one_of(NAMES, st.none()), max_size=40)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(STEPS, min_size=1, max_size=3), st.booleans(), st.booleans())
def test_round_trip_random_traces(tmp_path, threads, pretty, with_args):
    b = build_random(threads, with_args)
    path = tmp_path / "r.json"
    write_trace(str(path), metadata(b), b.functions(), list(b.threads.values()), pretty)
    trace = calltrace.load(path)
    assert [(t.tid, t.main, [c.to_json() for c in t.calls]) for t in trace.threads] == [
        (t.tid, t.main, [c.to_json() for c in t.calls]) for t in b.threads.values()]
    assert [f.to_json() for f in trace.functions] == [f.to_json() for f in b.functions()]
    assert [len(t.calls) for t in trace.threads] == [len(t.calls) for t in b.threads.values()]
    assert column_rows(trace) == [[c.to_row() for c in t.calls] for t in b.threads.values()]
