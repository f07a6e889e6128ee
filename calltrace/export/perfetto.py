"""Perfetto's native trace (protobuf TracePacket stream, the messages of
Perfetto's published trace.proto, from the `perfetto` package): one track
per thread under a process track, each call a TrackEvent slice (BEGIN at its
start, END at its end). Each thread is a packet sequence of its own, with
function names interned once per sequence and timestamps as deltas on a
sequence-scoped incremental clock; the clock is anchored at the trace's
start (BOOTTIME 0 = metadata.start_time)."""
from __future__ import annotations

from typing import BinaryIO

from ..trace.model import Trace
from . import Options, default_title

SUFFIX = ".pftrace"
BINARY = True
CLOCK = 64              # first sequence-scoped clock id
_FLUSH = 4096           # packets serialized at a time


def _pb():
    try:
        from perfetto.protos.perfetto.trace import perfetto_trace_pb2
    except ImportError:
        from ..errors import CalltraceError
        raise CalltraceError("-f perfetto needs the perfetto package: pip install perfetto") from None
    return perfetto_trace_pb2


def write(trace: Trace, out: BinaryIO, options: Options) -> None:
    pb = _pb()
    md = trace.metadata
    pid = md.get("pid") or 0
    proc_uuid = pid << 20 | 1
    head = pb.Trace()
    p = head.packet.add()
    p.trusted_packet_sequence_id = 1
    d = p.track_descriptor
    d.uuid = proc_uuid
    d.process.pid = pid
    d.process.process_name = options.title or default_title(trace)
    d.process.cmdline.extend(md.get("argv") or [])
    for i, t in enumerate(trace.threads):
        p = head.packet.add()
        p.trusted_packet_sequence_id = 1
        d = p.track_descriptor
        d.uuid = proc_uuid + i + 1
        d.parent_uuid = proc_uuid
        d.thread.pid = pid
        d.thread.tid = t.tid
        d.thread.thread_name = t.name or ("main" if t.main else f"thread {t.tid}")
    out.write(head.SerializeToString())
    iids = {f.function: i + 1 for i, f in enumerate(trace.functions)}
    for i, t in enumerate(trace.threads):
        _thread(pb, out, t, i + 2, proc_uuid + i + 1, iids)


def _thread(pb, out: BinaryIO, thread, seq: int, uuid: int, iids: dict[str, int]) -> None:
    BEGIN, END = pb.TrackEvent.TYPE_SLICE_BEGIN, pb.TrackEvent.TYPE_SLICE_END
    NEEDS = pb.TracePacket.SEQ_NEEDS_INCREMENTAL_STATE
    batch = pb.Trace()
    p = batch.packet.add()
    p.trusted_packet_sequence_id = seq
    p.sequence_flags = pb.TracePacket.SEQ_INCREMENTAL_STATE_CLEARED
    p.timestamp = 0
    p.timestamp_clock_id = pb.BUILTIN_CLOCK_BOOTTIME
    for clock_id, incremental in ((CLOCK, True), (pb.BUILTIN_CLOCK_BOOTTIME, False)):
        c = p.clock_snapshot.clocks.add()
        c.clock_id = clock_id
        c.timestamp = 0
        if incremental:
            c.is_incremental = True
    p.trace_packet_defaults.timestamp_clock_id = CLOCK
    p.trace_packet_defaults.track_event_defaults.track_uuid = uuid
    interned: set[int] = set()
    last = 0
    ends: list[int] = []      # end times of the open calls, innermost last

    def event(at: int, kind: int, iid: int = 0, name: str | None = None) -> None:
        nonlocal last, batch
        q = batch.packet.add()
        q.trusted_packet_sequence_id = seq
        q.sequence_flags = NEEDS
        q.timestamp = at - last
        last = at
        e = q.track_event
        e.type = kind
        if kind == BEGIN:
            e.name_iid = iid
            if iid not in interned:
                interned.add(iid)
                n = q.interned_data.event_names.add()
                n.iid = iid
                n.name = name
        if len(batch.packet) >= _FLUSH:
            out.write(batch.SerializeToString())
            batch = pb.Trace()

    for fn, depth, start, dur, _ in thread.rows():
        while len(ends) > depth:
            event(max(ends.pop(), last), END)
        iid = iids.get(fn)
        if iid is None:
            iid = iids[fn] = len(iids) + 1
        # Time never steps back on a track, even where a child outlasts its parent.
        at = max(start, last)
        event(at, BEGIN, iid, fn)
        ends.append(max(start + dur, at))
    while ends:
        event(max(ends.pop(), last), END)
    out.write(batch.SerializeToString())
