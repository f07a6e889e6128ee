"""Load a trace document into the model, with clear errors for bad files."""
from __future__ import annotations

import json
import os

from ..errors import TraceFormatError
from .model import Call, FunctionStats, Thread, Trace


def load(path: str) -> Trace:
    """Read a trace written by any calltrace producer."""
    try:
        with open(path, "rb") as f:
            data = f.read()
    except FileNotFoundError:
        raise TraceFormatError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise TraceFormatError(f"{path}: is a directory, not a trace") from None
    except OSError as e:
        raise TraceFormatError(f"{path}: cannot read: {e.strerror}") from None
    if not data.strip():
        raise TraceFormatError(f"{path}: empty file, not a calltrace trace")
    try:
        doc = json.loads(data)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        pos = getattr(e, "pos", None)
        if pos is not None and pos >= len(data.rstrip()) - 1:
            raise TraceFormatError(f"{path}: truncated trace (ends after {len(data)} bytes)") from None
        raise TraceFormatError(f"{path}: not JSON ({e.__class__.__name__}: {e})") from None
    return from_document(doc, path)


def from_document(doc: object, path: str | None = None) -> Trace:
    where = path or "trace"
    if not isinstance(doc, dict) or doc.get("format") != "calltrace":
        raise TraceFormatError(f"{where}: not a calltrace trace (no \"format\": \"calltrace\")")
    if doc.get("version") != 1:
        raise TraceFormatError(f"{where}: unsupported trace version {doc.get('version')!r}")
    try:
        threads = [Thread(t["tid"], [Call.from_json(c) for c in t["calls"]], t.get("name"),
                          t.get("main", False)) for t in doc["threads"]]
        functions = [FunctionStats.from_json(f) for f in doc["functions"]]
        metadata = doc["metadata"]
        metadata["total_calls"]
    except (KeyError, TypeError) as e:
        raise TraceFormatError(f"{where}: malformed trace (missing or wrong field {e})") from None
    return Trace(metadata, functions, threads, os.fspath(path) if path else None)
