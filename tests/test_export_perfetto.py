"""`export -f perfetto`, decoded with Perfetto's published protos: every
call a slice on its thread's track, nested, named through interning, with
incremental timestamps on a sequence-scoped clock."""
from __future__ import annotations

from perfetto.protos.perfetto.trace import perfetto_trace_pb2 as pb

from conftest import fixture, load_json, run_cli


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
