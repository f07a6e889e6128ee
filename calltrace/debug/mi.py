"""GDB/MI records as typed values, and what they mean for a traced run.

Pure functions, no I/O: ``parse(line)`` turns one line of MI output into a
:class:`Record` (pygdbmi does the tokenising), ``outcome(record)`` tells
whether a ``*stopped`` record ends the program and with which status, and
``quote`` builds MI C-string arguments. Unit-tested with tables of MI lines
(tests/test_debug_mi.py).
"""
from __future__ import annotations

import signal
from typing import Any, NamedTuple

from pygdbmi import gdbmiparser


class Record(NamedTuple):
    kind: str               # result, notify, exec, console, log, target, output, prompt
    message: str | None     # done/error/running/stopped/thread-group-started/...
    payload: Any            # dict of results, or the text of a stream record
    token: int | None = None


def parse(line: str) -> Record:
    """One line of MI output (without its newline) as a Record."""
    line = line.rstrip("\r\n")
    if line.strip() in ("(gdb)", "(gdb) "):
        return Record("prompt", None, None)
    return from_dict(gdbmiparser.parse_response(line))


def from_dict(d: dict) -> Record:
    """A Record from pygdbmi's parsed-response dict."""
    kind = d.get("type", "output")
    if kind == "done":          # pygdbmi's name for the "(gdb)" prompt
        kind = "prompt"
    return Record(kind, d.get("message"), d.get("payload"), d.get("token"))


class Outcome(NamedTuple):
    """How the program ended: shell-style status, and the signal if any."""
    status: int
    signal: int | None
    reason: str


def signal_number(name: str | None) -> int | None:
    if not name:
        return None
    try:
        return int(signal.Signals[name])
    except KeyError:
        return None


def outcome(rec: Record) -> Outcome | None:
    """The program's end from a ``*stopped`` record, or None if it is a stop
    the program survives (a breakpoint, a signal GDB was asked to stop on)."""
    if rec.kind != "notify" or rec.message != "stopped" or not isinstance(rec.payload, dict):
        return None
    reason = rec.payload.get("reason", "")
    if reason == "exited-normally":
        return Outcome(0, None, reason)
    if reason == "exited":
        # GDB prints the exit code in octal ("01", "0377").
        code = rec.payload.get("exit-code", "0")
        return Outcome(int(code, 8), None, reason)
    if reason == "exited-signalled":
        sig = signal_number(rec.payload.get("signal-name"))
        return Outcome(128 + (sig or 0), sig, reason)
    return None


def error_message(rec: Record) -> str | None:
    """The message of a ``^error`` result record."""
    if rec.kind == "result" and rec.message == "error":
        p = rec.payload if isinstance(rec.payload, dict) else {}
        return str(p.get("msg", "unknown GDB error"))
    return None


def quote(text: str) -> str:
    """An MI C-string literal for text."""
    out = ['"']
    for ch in text:
        if ch in '"\\':
            out.append("\\" + ch)
        elif ch == "\n":
            out.append("\\n")
        elif ch == "\t":
            out.append("\\t")
        elif ord(ch) < 0x20:
            out.append("\\%03o" % ord(ch))
        else:
            out.append(ch)
    out.append('"')
    return "".join(out)


def console(command: str) -> str:
    """An MI command running a CLI command (``-interpreter-exec console``)."""
    return "-interpreter-exec console " + quote(command)
