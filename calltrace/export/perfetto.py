"""Perfetto's native trace (protobuf TracePacket stream, the messages of
Perfetto's published trace.proto, from the `perfetto` package): one track
per thread under a process track, each call a TrackEvent slice (BEGIN at its
start, END at its end). Each thread is a packet sequence of its own, with
function names interned once per sequence and timestamps as deltas on a
sequence-scoped incremental clock; the clock is anchored at the trace's
start (BOOTTIME 0 = metadata.start_time).

The packets describing tracks and clocks are built here with the generated
classes; the per-call packets are encoded by a native kernel
(trace/kernels.Perfetto) with the tags and enum values read from the same
classes' descriptors, so the protos stay the one definition of the format."""
from __future__ import annotations

from typing import BinaryIO

from ..bridge import Pf
from ..trace.model import Trace
from . import Options, default_title

SUFFIX = ".pftrace"
BINARY = True
CLOCK = 64              # first sequence-scoped clock id


def _pb():
    try:
        from perfetto.protos.perfetto.trace import perfetto_trace_pb2
    except ImportError:
        from ..errors import CalltraceError
        raise CalltraceError("-f perfetto needs the perfetto package: pip install perfetto") from None
    return perfetto_trace_pb2


def _tag(message, name: str) -> int:
    """The wire tag of a field: its number and wire type (varint or length-delimited)."""
    f = message.DESCRIPTOR.fields_by_name[name]
    if f.type in (f.TYPE_MESSAGE, f.TYPE_STRING, f.TYPE_BYTES):
        return f.number << 3 | 2
    if f.type in (f.TYPE_UINT64, f.TYPE_UINT32, f.TYPE_INT64, f.TYPE_INT32, f.TYPE_ENUM):
        return f.number << 3
    from ..errors import CalltraceError
    raise CalltraceError(f"-f perfetto: {message.DESCRIPTOR.name}.{name} has an unexpected type {f.type}")


def wire(pb) -> Pf:
    """The kernel's tags and values, from the generated classes."""
    packet, event, names = pb.TracePacket, pb.TrackEvent, pb.EventName
    return Pf(packet=_tag(pb.Trace, "packet"), timestamp=_tag(packet, "timestamp"),
              seq_id=_tag(packet, "trusted_packet_sequence_id"), seq_flags=_tag(packet, "sequence_flags"),
              track_event=_tag(packet, "track_event"), interned_data=_tag(packet, "interned_data"),
              type=_tag(event, "type"), name_iid=_tag(event, "name_iid"),
              event_names=_tag(pb.InternedData, "event_names"), iid=_tag(names, "iid"),
              name=_tag(names, "name"), begin=event.TYPE_SLICE_BEGIN, end=event.TYPE_SLICE_END,
              needs=packet.SEQ_NEEDS_INCREMENTAL_STATE)


def write(trace: Trace, out: BinaryIO, options: Options) -> None:
    from ..analysis.view import selection
    from ..trace.colsource import Names, columns
    from ..trace.kernels import Perfetto
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
    # iid = name id + 1: the most called functions get the one-byte iids.
    names = Names(f.function for f in sorted(trace.functions, key=lambda f: -f.calls))
    kernel = None
    for i, t in enumerate(trace.threads):
        out.write(_first_packet(pb, i + 2, proc_uuid + i + 1))
        # A filtered view (export -F/-N/-t) is selected by the kernel itself.
        thread, flt, budget = selection(t)
        kernel = kernel or Perfetto(wire(pb), names, flt)
        for piece in kernel.run(i + 2, columns(thread, names)):
            out.write(piece)
            if budget is not None:
                budget.check(budget.seen + kernel.shown)
        if budget is not None:
            budget.seen += kernel.shown


def _first_packet(pb, seq: int, uuid: int) -> bytes:
    """A sequence's first packet: incremental state cleared, its clock
    anchored at 0, and the defaults its events lean on (clock and track)."""
    t = pb.Trace()
    p = t.packet.add()
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
    return t.SerializeToString()
