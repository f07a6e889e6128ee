"""Synthetic traces for the post-mortem tests, written through the project's
own TraceBuilder and write_trace, so they have the canonical layout.

A call tree is given as nested tuples ``(function, start_ns, end_ns,
[children], extra)`` where ``extra`` (optional) is a dict of Call fields
such as ``args`` or ``ret``.
"""
from __future__ import annotations

import os
import re
from pathlib import Path

from calltrace.trace.builder import TraceBuilder
from calltrace.trace.writer import write_trace
from conftest import run_cli


def read_until_closed(fd: int) -> bytes:
    """Everything a pty master yields until the other side is closed."""
    chunks = []
    while True:
        try:
            data = os.read(fd, 65536)
        except OSError:     # EIO: the last writer is gone
            break
        if not data:
            break
        chunks.append(data)
    return b"".join(chunks)


def cli_stdout(*args, status: int = 0) -> str:
    """The output of `calltrace ARGS`, which must exit with `status` and
    write nothing on stderr."""
    p = run_cli(*args)
    assert p.returncode == status, p.stderr.decode()
    assert p.stderr == b""
    return p.stdout.decode()


def metadata(builder: TraceBuilder, **over) -> dict:
    md = {"total_calls": builder.total_calls, "program": "/opt/demo/prog", "argv": ["prog", "-x"],
          "pid": 4242, "parent_pid": None, "exit_status": 0, "termination": "exit",
          "signal": None, "backend": "runtime", "start_time": "2026-01-02T03:04:05+00:00",
          "duration_ns": builder.last_ns, "clock": "monotonic",
          "options": {"max_depth": None, "capture_args": False, "pretty": False},
          "thread_count": len(builder.threads), "incomplete_calls": builder.incomplete,
          "depth_limited_calls": 0, "dropped_events": 0, "calltrace_version": "0.1.0",
          "hostname": "testhost"}
    md.update(over)
    return md


def _feed(b: TraceBuilder, tid: int, node) -> None:
    name, start, end, children, *rest = node
    extra = dict(rest[0]) if rest else {}
    ret = extra.pop("ret", None)
    b.enter(tid, name, start, **extra)
    for child in children:
        _feed(b, tid, child)
    if end is not None:
        b.exit(tid, end, ret=ret)


def build(threads: list[tuple[int, str | None, list]], end_ns: int | None = None) -> TraceBuilder:
    """``threads``: (tid, name, [root nodes]); the first is the main thread.
    A node whose end is None stays open and is closed as incomplete."""
    b = TraceBuilder()
    for i, (tid, name, roots) in enumerate(threads):
        b.thread(tid, name, main=(i == 0))
        for root in roots:
            _feed(b, tid, root)
    b.finish(end_ns)
    return b


def write(path: str | Path, threads, pretty: bool = False, end_ns: int | None = None,
          **meta) -> str:
    b = build(threads, end_ns)
    write_trace(str(path), metadata(b, **meta), b.functions(), list(b.threads.values()), pretty)
    return str(path)


def build_random(threads, with_args: bool = False) -> TraceBuilder:
    """``threads``: per thread a list of steps, a name to enter a call or
    None to leave the innermost one (hypothesis-generated)."""
    b = TraceBuilder()
    ts = 0
    for k, steps in enumerate(threads):
        tid = 10 + k
        b.thread(tid, None, main=(k == 0))
        depth = 0
        for step in steps:
            ts += 7
            if step is None:
                if depth:
                    b.exit(tid, ts)
                    depth -= 1
            else:
                extra = {"args": [{"name": "v", "type": "const char *", "value": step}]} if with_args else {}
                b.enter(tid, step, ts, **extra)
                depth += 1
    b.finish(ts + 1)
    return b


def leaf(name: str, start: int, end: int, **extra):
    return (name, start, end, [], extra)


# A small two-thread program: main -> parse (twice), compute -> fib recursion;
# a worker thread running work() -> fib.
def demo_threads() -> list:
    fib3 = ("fib", 2000, 2900, [("fib", 2100, 2500, [leaf("fib", 2150, 2250), leaf("fib", 2300, 2450)]),
                                leaf("fib", 2550, 2800)])
    main = ("main", 0, 10_000, [
        leaf("parse", 100, 600, args=[{"name": "s", "type": "const char *", "value": "a,b"}],
             ret={"type": "int", "value": 2}),
        leaf("parse", 700, 1000, args=[{"name": "s", "type": "const char *", "value": "c"}],
             ret={"type": "int", "value": 1}),
        ("compute", 1500, 9000, [fib3, leaf("report", 3000, 8500)]),
    ])
    worker = ("work", 1000, 6000, [leaf("fib", 1200, 5200)])
    return [(100, None, [main]), (101, "worker-1", [worker])]


def write_demo(path: str | Path, pretty: bool = False) -> str:
    return write(path, demo_threads(), pretty=pretty)


_TIME = re.compile(r"\b\d+(?:\.\d+)?\s?(?:ns|us|µs|ms|s)\b")


def normalise_times(text: str) -> str:
    """Durations vary from run to run: replace every one by a placeholder."""
    return _TIME.sub("<t>", text)


GOLDEN = Path(__file__).resolve().parent / "golden"


def check_golden(name: str, text: str) -> None:
    """Compare with tests/golden/NAME; CALLTRACE_UPDATE_GOLDEN=1 rewrites it."""
    import os
    path = GOLDEN / name
    if os.environ.get("CALLTRACE_UPDATE_GOLDEN") == "1":
        path.parent.mkdir(exist_ok=True)
        path.write_text(text)
    assert path.exists(), f"missing golden file {path}: run with CALLTRACE_UPDATE_GOLDEN=1"
    assert text == path.read_text()


_REPLAY_LINE = re.compile(r"^(.{11})  (.{11})  (.*)$")
_THREAD = re.compile(r"^== thread \d+")


def normalise_replay(text: str, sort_threads: bool = False) -> str:
    """Start and duration columns and thread ids vary between runs; depth
    (the indentation) and everything else must not. Threads that run
    concurrently may be listed in either order: ``sort_threads``."""
    blocks, cur = [], []
    for line in text.splitlines():
        m = _REPLAY_LINE.match(line)
        if m and _TIME.fullmatch(m.group(1).strip()) and _TIME.fullmatch(m.group(2).strip()):
            line = f"<t> <t>  {m.group(3)}"
        line = _THREAD.sub("== thread <tid>", line)
        if line == "" and cur:
            blocks.append(cur)
            cur = []
            continue
        cur.append(line)
    if cur:
        blocks.append(cur)
    if sort_threads:
        blocks.sort()
    return "\n\n".join("\n".join(b) for b in blocks) + "\n"


def normalise_table(text: str, sort_threads: bool = False, tids=()) -> str:
    """Report-style output: cells are split on runs of 2+ spaces, every time
    replaced, thread ids and the program's path normalised."""
    out = []
    for line in text.splitlines():
        line = _THREAD.sub("== thread <tid>", line)
        line = re.sub(r"^/\S+/(\w[\w.-]*):", r"\1:", line)
        cells = re.split(r"\s{2,}", line.strip())
        cells = [_TIME.sub("<t>", c) if not _TIME.fullmatch(c) else "<t>" for c in cells]
        cells = ["<tid>" if c in {str(t) for t in tids} else c for c in cells]
        out.append(" | ".join(cells))
    text = "\n".join(out) + "\n"
    if sort_threads:
        head, *blocks = text.split("\n\n== ")
        text = "\n\n== ".join([head] + sorted(b.rstrip("\n") for b in blocks)) + "\n"
    return text


def drop_excluded(doc: dict, function: str, max_depth: int) -> int:
    """What `-N '^FUNCTION$' -D MAX_DEPTH` keeps, computed here: each
    thread's calls in `doc` without the calls of `function` nor those at or
    below `max_depth`, nor what they call. Returns how many were dropped."""
    dropped = 0
    for t in doc["threads"]:
        calls, skip = [], None
        for c in t["calls"]:
            if skip is not None and c["depth"] > skip:
                continue
            skip = None
            if c["function"] == function or c["depth"] >= max_depth:
                skip = c["depth"]
                dropped += 1
                continue
            calls.append(c)
        t["calls"] = calls
    return dropped
