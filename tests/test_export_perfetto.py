"""`export -f perfetto`, decoded with Perfetto's published protos: every
call a slice on its thread's track, nested, named through interning, with
incremental timestamps on a sequence-scoped clock."""
from __future__ import annotations

import io

import pytest
from perfetto.protos.perfetto.trace import perfetto_trace_pb2 as pb

from calltrace.export import Options, perfetto
from calltrace.trace import colsource, kernels
from calltrace.trace import parquet as parquet_reader
from calltrace.trace.model import Call, FunctionStats, Thread, Trace
from calltrace.trace.parts import load_any
from conftest import fixture, load_json, run_cli
from postmortem_util import drop_excluded


def slices(data: bytes) -> tuple[dict, dict]:
    """{track uuid: [(name, start, end, depth)]} and {uuid: (tid, name)}."""
    trace = pb.Trace.FromString(data)
    threads, per_seq, out = {}, {}, {}
    for p in trace.packet:
        if p.HasField("track_descriptor"):
            d = p.track_descriptor
            if d.HasField("thread"):
                threads[d.uuid] = (d.thread.tid, d.thread.thread_name)
            continue
        seq = p.trusted_packet_sequence_id
        if p.HasField("clock_snapshot"):
            assert p.sequence_flags == pb.TracePacket.SEQ_INCREMENTAL_STATE_CLEARED
            clocks = {c.clock_id: c for c in p.clock_snapshot.clocks}
            assert clocks[64].is_incremental and clocks[64].timestamp == 0
            per_seq[seq] = {"t": 0, "names": {}, "stack": [],
                            "uuid": p.trace_packet_defaults.track_event_defaults.track_uuid}
            assert p.trace_packet_defaults.timestamp_clock_id == 64
            continue
        s = per_seq[seq]
        assert p.sequence_flags == pb.TracePacket.SEQ_NEEDS_INCREMENTAL_STATE
        assert not p.HasField("timestamp_clock_id")
        s["t"] += p.timestamp
        for n in p.interned_data.event_names:
            assert n.iid not in s["names"]
            s["names"][n.iid] = n.name
        e = p.track_event
        if e.type == pb.TrackEvent.TYPE_SLICE_BEGIN:
            s["stack"].append((s["names"][e.name_iid], s["t"], len(s["stack"])))
        else:
            assert e.type == pb.TrackEvent.TYPE_SLICE_END
            name, start, depth = s["stack"].pop()
            out.setdefault(s["uuid"], []).append((name, start, s["t"], depth))
    assert all(not s["stack"] for s in per_seq.values())
    return out, threads


def test_slices_match_the_trace(tmp_path):
    out = tmp_path / "t.json"
    run_cli("run", "-q", "-o", out, fixture("threads"), check=True)
    doc = load_json(out)
    run_cli("export", out, "-f", "perfetto", "-o", tmp_path / "t.pftrace", check=True)
    got, threads = slices((tmp_path / "t.pftrace").read_bytes())
    assert sorted(tid for tid, _ in threads.values()) == sorted(t["tid"] for t in doc["threads"])
    by_tid = {threads[u][0]: sorted(v, key=lambda s: (s[1], s[3])) for u, v in got.items()}
    for t in doc["threads"]:
        want = sorted(((c["function"], c["start_ns"], c["start_ns"] + c["duration_ns"], c["depth"])
                       for c in t["calls"]), key=lambda s: (s[1], s[3]))
        assert by_tid[t["tid"]] == want
    names = {threads[u][1] for u in threads}
    assert names == {"threads"}


def test_filters_and_size_guard(tmp_path):
    out = tmp_path / "t.json"
    run_cli("run", "-q", "-o", out, fixture("threads"), check=True)
    doc = load_json(out)
    tid = doc["threads"][1]["tid"]
    run_cli("export", out, "-f", "perfetto", "--tid", str(tid), "-F", "^step$",
            "-o", tmp_path / "s.pftrace", check=True)
    got, threads = slices((tmp_path / "s.pftrace").read_bytes())
    assert [threads[u][0] for u in threads] == [tid]
    (only,) = got.values()
    assert sorted((n, d) for n, _, _, d in only) == [("step", 0)] * 3 + [("twice", 1)] * 3
    p = run_cli("export", out, "-f", "perfetto", "--max-events", "30", "-o", tmp_path / "no.pftrace")
    assert p.returncode == 2
    assert p.stderr.decode() == (f"calltrace: error: {out}: more than 30 calls to export; narrow it "
                                 "with -F/-N/-t/--tid or raise --max-events (nothing written)\n")
    assert not (tmp_path / "no.pftrace").exists()
    assert sorted(f.name for f in tmp_path.iterdir()) == ["s.pftrace", "t.json"]


def interned(data: bytes) -> dict[int, list[str]]:
    """{sequence: names in the order they were interned}."""
    out: dict[int, list[str]] = {}
    for p in pb.Trace.FromString(data).packet:
        out.setdefault(p.trusted_packet_sequence_id, []).extend(n.name for n in p.interned_data.event_names)
    return {s: names for s, names in out.items() if names}


def export(trace: Trace) -> bytes:
    out = io.BytesIO()
    perfetto.write(trace, out, Options())
    return out.getvalue()


def expected(doc: dict) -> dict[int, list[tuple]]:
    """{tid: (name, start, end, depth)} from the JSON trace: every call."""
    return {t["tid"]: sorted(((c["function"], c["start_ns"], c["start_ns"] + c["duration_ns"], c["depth"])
                              for c in t["calls"]), key=lambda s: (s[1], s[3]))
            for t in doc["threads"]}


@pytest.mark.parametrize("program", [["workers"], ["deep", "2500"], ["threads"]])
def test_many_small_batches(tmp_path, monkeypatch, program):
    """Parquet read 7 calls at a time and a few packets encoded between
    writes: the kernel's open calls, clock and interned names cross hundreds
    of batch boundaries and of full buffers, on threads and on a 2500-deep
    recursion."""
    out = tmp_path / "t.json"
    run_cli("run", "-q", "-o", out, fixture(program[0]), *program[1:], check=True)
    run_cli("export", out, "-f", "parquet", "-o", tmp_path / "t.parquet", check=True)
    doc = load_json(out)
    monkeypatch.setattr(parquet_reader, "READ_BATCH", 7)
    monkeypatch.setattr(kernels.Perfetto, "BUFFER", 1)
    trace = load_any([str(tmp_path / "t.parquet")])
    batches = sum(1 for t in trace.threads for _ in colsource.columns(t, colsource.Names()))
    assert batches >= doc["metadata"]["total_calls"] // 7
    got, threads = slices(export(trace))
    by_tid = {threads[u][0]: sorted(v, key=lambda s: (s[1], s[3])) for u, v in got.items()}
    assert by_tid == expected(doc)
    assert sum(map(len, by_tid.values())) == doc["metadata"]["total_calls"]
    if program[0] == "deep":
        assert max(d for _, _, _, d in by_tid[doc["threads"][0]["tid"]]) == 2500


def test_names_first_met_in_later_batches(monkeypatch):
    """Batches of 2 calls, no function table and a buffer of a few packets:
    names are met batch after batch (one longer than the buffer was), each
    interned once per sequence at its first BEGIN; a child that outlasts its
    parent is clamped so time never steps back on the track."""
    monkeypatch.setattr(colsource, "BATCH", 2)
    monkeypatch.setattr(kernels.Perfetto, "BUFFER", 1)
    b = "b" * 3000
    one = [Call("main", 0, 100, 1000), Call("a", 1, 110, 50), Call("a", 1, 200, 50),
           Call(b, 1, 300, 900), Call("c", 0, 1150, 10)]
    two = [Call("c", 0, 0, 5), Call(b, 0, 10, 5), Call("a", 1, 12, 1)]
    trace = Trace({"pid": 7, "program": "/bin/p", "total_calls": 8}, [FunctionStats("main", 1)],
                  [Thread(70, one, main=True), Thread(71, two, "w")])
    data = export(trace)
    got, threads = slices(data)
    assert threads == {(7 << 20 | 1) + 1: (70, "main"), (7 << 20 | 1) + 2: (71, "w")}
    by_tid = {threads[u][0]: sorted(v, key=lambda s: (s[1], s[3])) for u, v in got.items()}
    assert by_tid == {70: [("main", 100, 1200, 0), ("a", 110, 160, 1), ("a", 200, 250, 1),
                           (b, 300, 1200, 1), ("c", 1200, 1200, 0)],
                      71: [("c", 0, 5, 0), (b, 10, 15, 0), ("a", 12, 13, 1)]}
    assert interned(data) == {2: ["main", "a", b, "c"], 3: ["c", b, "a"]}


def test_depth_and_exclude(tmp_path):
    """-N drops a function with what it calls, -D the calls at or below a
    depth: the same selection as replay and chrome, in the kernel."""
    out = tmp_path / "t.json"
    run_cli("run", "-q", "-o", out, fixture("threads"), check=True)
    doc = load_json(out)
    run_cli("export", out, "-f", "perfetto", "-N", "^step$", "-D", "2", "-o", tmp_path / "s.pftrace", check=True)
    got, threads = slices((tmp_path / "s.pftrace").read_bytes())
    by_tid = {threads[u][0]: sorted(v, key=lambda s: (s[1], s[3])) for u, v in got.items()}
    dropped = drop_excluded(doc, "step", 2)
    want = {t["tid"]: [(c["function"], c["start_ns"], c["start_ns"] + c["duration_ns"], c["depth"])
                       for c in t["calls"]] for t in doc["threads"] if t["calls"]}
    assert dropped and by_tid == {tid: sorted(v, key=lambda s: (s[1], s[3])) for tid, v in want.items()}
