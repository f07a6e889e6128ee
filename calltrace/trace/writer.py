"""Write a trace document (docs/FORMAT.md) from Python.

The layout matches runtime/convert.c: top-level keys in order, and one call
per line in compact mode so line tools work and truncation loses little.
"""
from __future__ import annotations

import json
from typing import Iterable

from ..errors import CalltraceError
from ..files import write_atomic
from .model import FunctionStats, Thread

REQUIRED_METADATA = ("total_calls", "program", "argv", "pid", "exit_status", "termination",
                     "backend", "start_time", "duration_ns", "clock", "options",
                     "thread_count", "incomplete_calls", "depth_limited_calls",
                     "dropped_events", "calltrace_version")


def _dump(obj, pretty: bool, indent: int = 0) -> str:
    if pretty:
        text = json.dumps(obj, indent=2, ensure_ascii=False)
        return text.replace("\n", "\n" + " " * indent)
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False)


def write_trace(path: str, metadata: dict, functions: Iterable[FunctionStats],
                threads: Iterable[Thread], pretty: bool = False) -> None:
    """Write atomically: a temporary file in the same folder, then rename, so a
    reader never sees half a trace and a symlink at ``path`` is replaced, not
    followed."""
    missing = [k for k in REQUIRED_METADATA if k not in metadata]
    if missing:
        raise CalltraceError(f"internal: trace metadata lacks {', '.join(missing)}")
    write_atomic(path, lambda f: _write(f, metadata, functions, threads, pretty), "trace",
                 encoding="utf-8")


def document_head(metadata: dict, functions: Iterable[FunctionStats], pretty: bool) -> str:
    """Everything up to and including `"threads":[` (runtime/convert.c
    writes the threads after this for runtime traces)."""
    ind = "  " if pretty else ""
    sep = ": " if pretty else ":"
    parts = ["{\n", f'{ind}"format"{sep}"calltrace",\n', f'{ind}"version"{sep}1,\n',
             f'{ind}"metadata"{sep}{_dump(metadata, pretty, len(ind))},\n', f'{ind}"functions"{sep}[']
    fns = [("\n" + ind * 2 + _dump(fn.to_json(), False)) for fn in functions]
    parts.append(",".join(fns))
    parts.append(("\n" + ind + "],\n") if fns else "],\n")
    parts.append(f'{ind}"threads"{sep}[')
    return "".join(parts)


def thread_head(tid: int, name: str | None, main: bool) -> str:
    """The opening of one thread object, up to where `"calls":[` follows."""
    return _dump({"tid": tid, "name": name, "main": main}, False)[:-1] + ","


def document_tail(pretty: bool) -> str:
    return "\n  ]\n}\n" if pretty else "\n]\n}\n"


def _write(f, metadata, functions, threads, pretty: bool) -> None:
    f.write(document_head(metadata, functions, pretty))
    for i, t in enumerate(threads):
        f.write(("," if i else "") + "\n" + ("    " if pretty else "")
                + thread_head(t.tid, t.name, t.main) + '"calls":[')
        lead = "\n      " if pretty else "\n"
        f.write(",".join(lead + _dump(c.to_json(), False) for c in t.calls))
        f.write("]}")
    f.write(document_tail(pretty))
