"""Write a trace document (docs/FORMAT.md) from Python.

The layout matches runtime/convert.c: top-level keys in order, and one call
per line in compact mode so line tools work and truncation loses little.
"""
from __future__ import annotations

import json
import os
import tempfile
from typing import Iterable

from ..errors import CalltraceError
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
    folder = os.path.dirname(os.path.abspath(path))
    try:
        fd, tmp = tempfile.mkstemp(prefix=".calltrace-", suffix=".tmp", dir=folder)
    except OSError as e:
        raise CalltraceError(f"cannot write trace {path}: {e.strerror}") from None
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            _write(f, metadata, functions, threads, pretty)
        mask = os.umask(0)
        os.umask(mask)
        os.chmod(tmp, 0o666 & ~mask)
        os.replace(tmp, path)
    except OSError as e:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise CalltraceError(f"cannot write trace {path}: {e.strerror}") from None


def _write(f, metadata, functions, threads, pretty: bool) -> None:
    nl = "\n"
    f.write('{\n"format":"calltrace",\n"version":1,\n' if not pretty
            else '{\n  "format": "calltrace",\n  "version": 1,\n')
    key = (lambda k: f'  "{k}": ') if pretty else (lambda k: f'"{k}":')
    f.write(key("metadata") + _dump(metadata, pretty, 2) + ",\n")
    f.write(key("functions") + "[")
    first = True
    for fn in functions:
        f.write(("" if first else ",") + nl + ("    " if pretty else "")
                + _dump(fn.to_json(), False))
        first = False
    f.write(nl + ("  " if pretty else "") + "],\n" if not first else "],\n")
    f.write(key("threads") + "[")
    first_t = True
    for t in threads:
        head = {"tid": t.tid, "name": t.name, "main": t.main}
        f.write(("" if first_t else ",") + nl + ("    " if pretty else "")
                + _dump(head, False)[:-1] + ',"calls":[')
        first_t = False
        first_c = True
        for c in t.calls:
            f.write(("" if first_c else ",") + nl + ("      " if pretty else "")
                    + _dump(c.to_json(), False))
            first_c = False
        f.write("]}")
    f.write(nl + ("  " if pretty else "") + "]\n}\n" if not first_t else "]\n}\n")
