"""The GDB-side recorder's event stream, read while it grows, turned into a
trace with the shared TraceBuilder.

Durations: every timestamp is the thread's own CPU time (schedstat), which
does not advance while the thread sits stopped in GDB. What remains of each
stop is the kernel's trap and resume work charged to the thread; it is
calibrated per run as the smallest CPU time per stop between two
consecutive events of one thread, and subtracted once per stop.
"""
from __future__ import annotations

import json
import os
from typing import NamedTuple

from ..trace.builder import TraceBuilder


class Calibration(NamedTuple):
    per_stop_ns: int
    samples: int
    method: str = "smallest gap"
    spread_ns: int = 0          # standard deviation of the measured samples


class EventLog:
    """Tails the events file; keeps each thread's events in order."""

    def __init__(self, path: str):
        self.path = path
        self.offset = 0
        self.counted = 0
        self.partial = b""
        self.threads: dict[int, list[tuple]] = {}
        self.names: dict[int, str] = {}
        self.fninfo: dict[int, dict] = {}
        self.summary: dict = {}
        self.execed = False
        self.calls = 0

    def count_new(self) -> int:
        """While the program runs: count the calls appended since the last
        look, without parsing (calltrace and GDB share two cores: parsing
        now would slow the traced program down)."""
        try:
            size = os.path.getsize(self.path)
        except OSError:
            return 0
        if size <= self.counted:
            return 0
        with open(self.path, "rb") as f:
            f.seek(self.counted)
            data = f.read(size - self.counted)
        cut = data.rfind(b"\n") + 1
        self.counted += cut
        data = data[:cut]
        # every chunk starts at a line start: the last one ended at a newline
        return data.count(b"\nE\t") + data.startswith(b"E\t")

    def read_new(self) -> int:
        """Parse what was appended since the last call; returns new calls."""
        try:
            with open(self.path, "rb") as f:
                f.seek(self.offset)
                data = f.read()
        except FileNotFoundError:
            return 0
        self.offset += len(data)
        data = self.partial + data
        lines = data.split(b"\n")
        self.partial = lines.pop()
        before = self.calls
        for raw in lines:
            if raw:
                self._line(raw.decode("utf-8", errors="replace"))
        return self.calls - before

    def summary_written(self) -> bool:
        """Whether the recorder's final S line is in the file (cheap check)."""
        try:
            with open(self.path, "rb") as f:
                f.seek(max(0, os.path.getsize(self.path) - 4096))
                return b"\nS\t" in b"\n" + f.read()
        except OSError:
            return False

    def _line(self, line: str) -> None:
        parts = line.split("\t", {"E": 6, "X": 4, "S": 1, "Z": 1}.get(line[0], 2))
        kind = parts[0]
        if kind == "E":
            tid = int(parts[1])
            args = json.loads(parts[6]) if len(parts) > 6 else None
            self._events(tid).append(("E", int(parts[2]), int(parts[4]), int(parts[5]),
                                      int(parts[3]), args))
            self.calls += 1
        elif kind == "X":
            tid = int(parts[1])
            self._events(tid).append(("X", int(parts[2]), int(parts[3]), int(parts[4])))
        elif kind == "R":
            self._events(int(parts[1])).append(("R", json.loads(parts[2])))
        elif kind == "F":
            self.fninfo[int(parts[1])] = json.loads(parts[2])
        elif kind == "T":
            self.names[int(parts[1])] = parts[2] if len(parts) > 2 else ""
        elif kind == "Z":
            self.execed = True
        elif kind == "S":
            self.summary = json.loads(parts[1])

    def _events(self, tid: int) -> list[tuple]:
        ev = self.threads.get(tid)
        if ev is None:
            ev = self.threads[tid] = []
        return ev


def calibrate(log: EventLog) -> Calibration:
    """CPU ns one stop charges to the thread: the trimmed mean of the
    recorder's measurements (ct_calib.py), or, short of those, the smallest
    CPU time per stop between consecutive events of a thread."""
    samples = sorted(log.summary.get("calibration") or [])
    if len(samples) >= 20:
        # the mean (sums over many stops come out right), without the top 2%:
        # a stray interrupt of a millisecond is not a stop's cost
        kept = samples[:len(samples) - max(1, len(samples) // 50)]
        mean = sum(kept) / len(kept)
        spread = (sum((x - mean) ** 2 for x in kept) / len(kept)) ** 0.5
        return Calibration(int(mean), len(samples), "measured", int(spread))
    best, samples = None, 0
    for events in log.threads.values():
        prev = None
        for ev in events:
            if ev[0] == "R":
                continue
            if prev is not None and ev[3] > prev[3]:
                per = (ev[2] - prev[2]) / (ev[3] - prev[3])
                best = per if best is None else min(best, per)
                samples += 1
            prev = ev
    return Calibration(max(0, int(best or 0)), samples, "smallest gap")


def display_names(fninfo: dict[int, dict]) -> dict[int, str]:
    """Function names, made unique with " [file.c]" (FORMAT.md)."""
    base = {}
    for addr, info in fninfo.items():
        base[addr] = info.get("name") or "0x%x" % addr
    count: dict[str, set] = {}
    for addr, name in base.items():
        count.setdefault(name, set()).add(addr)
    out = {}
    for addr, name in base.items():
        if len(count[name]) > 1:
            info = fninfo[addr]
            where = info.get("file") or info.get("module") or "0x%x" % addr
            name = f"{name} [{os.path.basename(where)}]"
        out[addr] = name
    return out


def build(log: EventLog, main_tid: int | None, cal: Calibration) -> TraceBuilder:
    names = display_names(log.fninfo)
    b = TraceBuilder()
    c = cal.per_stop_ns
    for tid, events in log.threads.items():
        b.thread(tid, log.names.get(tid) or None, main=(tid == main_tid))
        last_ts = 0
        closed = None
        for ev in events:
            kind = ev[0]
            if kind == "R":
                if closed is not None:
                    closed.ret = ev[1]
                    closed = None
                continue
            ts = max(last_ts, ev[2] - ev[3] * c)
            last_ts = ts
            name = names.get(ev[1]) or "0x%x" % ev[1]
            if kind == "E":
                extra = {}
                if ev[4]:
                    extra["call_site"] = "0x%x" % ev[4]
                args = ev[5]
                if isinstance(args, list):
                    extra["args"] = args
                    if log.fninfo.get(ev[1], {}).get("variadic"):
                        extra["args_note"] = "variadic: the extra arguments are not captured"
                elif isinstance(args, str):
                    extra["args_note"] = args
                b.enter(tid, name, ts, **extra)
                closed = None
            else:
                closed = b.exit(tid, ts, function=name)
    b.finish()
    return b


def function_table(b: TraceBuilder, log: EventLog, program: str) -> list:
    names = display_names(log.fninfo)
    by_name = {n: a for a, n in names.items()}
    funcs = b.functions()
    for st in funcs:
        addr = by_name.get(st.function)
        if addr is None:
            continue
        info = log.fninfo.get(addr, {})
        st.address = "0x%x" % addr
        st.module = info.get("module") or program
        st.file = info.get("file")
        st.line = info.get("line")
        link = info.get("linkage")
        if link and link != st.function:
            st.symbol = link
    return funcs
