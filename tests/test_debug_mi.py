"""The pure parts of calltrace debug: MI records, program outcomes, quoting,
the event log and calibration. Tables of real MI lines as GDB 13 prints them."""
from __future__ import annotations

import pytest

from calltrace.debug import events, mi

PARSE = [
    ("^done", ("result", "done", None, None)),
    ("5^error,msg=\"No symbol table is loaded.\"",
     ("result", "error", {"msg": "No symbol table is loaded."}, 5)),
    ("*running,thread-id=\"all\"", ("notify", "running", {"thread-id": "all"}, None)),
    ("=thread-group-started,id=\"i1\",pid=\"4242\"",
     ("notify", "thread-group-started", {"id": "i1", "pid": "4242"}, None)),
    ("~\"Reading symbols...\\n\"", ("console", None, "Reading symbols...\n", None)),
    ("&\"warning: x\\n\"", ("log", None, "warning: x\n", None)),
    ("(gdb)", ("prompt", None, None, None)),
    ("(gdb) ", ("prompt", None, None, None)),
    ("plain text", ("output", None, "plain text", None)),
]


@pytest.mark.parametrize("line,want", PARSE)
def test_parse(line, want):
    rec = mi.parse(line)
    assert (rec.kind, rec.message, rec.payload, rec.token) == want


OUTCOMES = [
    ('*stopped,reason="exited-normally"', (0, None, "exited-normally")),
    ('*stopped,reason="exited",exit-code="03"', (3, None, "exited")),
    ('*stopped,reason="exited",exit-code="0377"', (255, None, "exited")),
    ('*stopped,reason="exited-signalled",signal-name="SIGSEGV",signal-meaning="Segmentation fault"',
     (139, 11, "exited-signalled")),
    ('*stopped,reason="exited-signalled",signal-name="SIGINT"', (130, 2, "exited-signalled")),
    ('*stopped,reason="signal-received",signal-name="SIGSEGV"', None),
    ('*stopped,reason="breakpoint-hit",disp="keep",bkptno="1"', None),
    ('*stopped,frame={addr="0x00007ffff7fe3290",func="_start"},thread-id="1"', None),
    ('^done', None),
    ('*running,thread-id="all"', None),
]


@pytest.mark.parametrize("line,want", OUTCOMES)
def test_outcome(line, want):
    got = mi.outcome(mi.parse(line))
    assert (tuple(got) if got else None) == want


def test_error_message():
    assert mi.error_message(mi.parse('^error,msg="boom"')) == "boom"
    assert mi.error_message(mi.parse("^done")) is None


@pytest.mark.parametrize("text,want", [
    ("abc", '"abc"'), ('a"b', '"a\\"b"'), ("a\\b", '"a\\\\b"'), ("x\ny", '"x\\ny"'),
    ("/path with spaces/p", '"/path with spaces/p"')])
def test_quote(text, want):
    assert mi.quote(text) == want
    # and pygdbmi reads it back
    assert mi.parse("~" + want).payload == text


def _log(tmp_path, lines):
    p = tmp_path / "events"
    p.write_text("".join(line + "\n" for line in lines))
    log = events.EventLog(str(p))
    log.read_new()
    return log


def test_event_log_and_calibration(tmp_path):
    # one thread: main -> f -> g; cpu grows by 1000 per stop plus real work
    log = _log(tmp_path, [
        "T\t7\tprog",
        'F\t16\t{"name":"main","module":null,"file":"a.c","line":1}',
        'F\t32\t{"name":"f","module":null,"file":"a.c","line":2}',
        'F\t48\t{"name":"g","module":null,"file":"a.c","line":3}',
        "E\t7\t16\t0\t1000\t1",
        'E\t7\t32\t99\t2500\t2\t[{"name":"x","type":"int","value":1}]',
        'E\t7\t48\t0\t3500\t3\t"no debug info"',
        "X\t7\t48\t4600\t4",
        "X\t7\t32\t5600\t5",
        'R\t7\t{"type":"int","value":9}',
        "X\t7\t16\t6600\t6",
        'S\t{"stops":6,"depth_limited":0,"errors":0,"first_error":null,"pid":7,"bias":0}',
    ])
    assert log.calls == 3 and log.names == {7: "prog"} and log.summary["pid"] == 7
    cal = events.calibrate(log)
    assert cal == events.Calibration(1000, 5, "smallest gap")
    b = events.build(log, 7, cal)
    calls = b.threads[7].calls
    assert [(c.function, c.depth) for c in calls] == [("main", 0), ("f", 1), ("g", 2)]
    # timestamps: cpu - n * 1000
    assert [(c.start_ns, c.duration_ns) for c in calls] == [(0, 600), (500, 100), (500, 100)]
    assert calls[1].args == [{"name": "x", "type": "int", "value": 1}]
    assert calls[1].call_site == "0x63" and calls[1].ret == {"type": "int", "value": 9}
    assert calls[2].args is None and calls[2].args_note == "no debug info"


def test_event_log_reads_partial_lines(tmp_path):
    p = tmp_path / "events"
    p.write_text("E\t1\t16\t0\t10\t1\nX\t1\t1")
    log = events.EventLog(str(p))
    assert log.read_new() == 1
    with open(p, "a") as f:
        f.write("6\t20\t2\n")
    log.read_new()
    assert log.threads[1][-1] == ("X", 16, 20, 2)


def test_display_names_unique():
    names = events.display_names({1: {"name": "helper", "file": "/x/a.c"},
                                  2: {"name": "helper", "file": "/y/b.c"},
                                  3: {"name": "main"}, 4: {"name": None}})
    assert names == {1: "helper [a.c]", 2: "helper [b.c]", 3: "main", 4: "0x4"}


def test_count_new_counts_calls_without_parsing(tmp_path):
    p = tmp_path / "events"
    p.write_text("E\t1\t16\t0\t10\t1\nX\t1\t16\t20\t2\nE\t1\t16\t0\t30\t3\nE\t1\t1")
    log = events.EventLog(str(p))
    assert log.count_new() == 2          # the partial last line waits
    with open(p, "a") as f:
        f.write("6\t0\t40\t4\nS\t{}\n")
    assert log.count_new() == 1 and log.summary_written()
    assert log.read_new() == 3 and log.calls == 3


def test_calibration_prefers_measured_samples(tmp_path):
    samples = [19000, 21000] * 49 + [30000, 5_000_000]     # the top 2% go
    log = _log(tmp_path, ["E\t1\t16\t0\t10\t1", "X\t1\t16\t999999\t2",
                          'S\t{"calibration": %s}' % samples])
    cal = events.calibrate(log)
    assert (cal.per_stop_ns, cal.samples, cal.method, cal.spread_ns) == (
        20000, 100, "measured", 1000)
