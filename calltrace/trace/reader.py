"""Load a trace: the header (metadata, functions) at once, the calls streamed
from the file each time they are iterated, so memory stays bounded whatever
the trace's size.

The fast path relies on the canonical layout that runtime/convert.c and
writer.py both write (compact or pretty): one call per line, threads opening
on a line of their own, ``"threads"`` the last top-level key. Any other JSON
layout (say, ``jq .`` output) is read whole with ``json`` instead, which is
correct but holds the document in memory.
"""
from __future__ import annotations

import json
import os
import re
from collections.abc import Sequence
from typing import Callable, Iterator

from ..bridge import RAW_MAGIC
from ..errors import TraceFormatError
from .model import Call, FunctionStats, StreamedCalls, Thread, Trace

CHUNK = 4 << 20
_MAX_HEAD = 256 << 20  # a header this large is not the canonical layout

# One call line. The four fixed keys come first in both writers; whatever
# follows (incomplete, args, ...) is parsed with json only when present.
_CALL = re.compile(
    rb'^[ \t]*\{"function":("[^"\\\n]*(?:\\.[^"\\\n]*)*"),"depth":(\d+),'
    rb'"start_ns":(\d+),"duration_ns":(\d+)([,}][^\r\n]*)\r?$', re.M)
_PLAIN_ENDS = frozenset((b"}", b"},", b"}]}", b"}]},"))
_THREADS_KEY = re.compile(rb'^(?:  )?"threads": ?\[(\]?)\s*$')
_FUNCTIONS_KEY = re.compile(rb'^(?:  )?"functions": ?\[')
# The end of the thread list: "\n]\n}\n"; a file cut inside it lacks the "}".
_TRAILER = re.compile(rb'\n[ \t]*\][ \t\r]*(?:\n(\})?\s*)?$')


class _Source:
    """The file the lazy call lists read from, shared by all threads."""

    def __init__(self, path: str, size: int, body_start: int, body_end: int, truncated: bool):
        self.path = path
        self.size = size
        self.body_start = body_start
        self.body_end = body_end
        self.truncated = truncated
        self.names: dict[bytes, str] = {}
        self.progress: Callable[[int], None] | None = None


class CallList(StreamedCalls):
    """A thread's calls, read from the file on every iteration."""

    def __init__(self, src: _Source, start: int, end: int):
        self._src = src
        self._start = start
        self._end = end
        self._count: int | None = None

    @property
    def nbytes(self) -> int:
        return self._end - self._start

    def __len__(self) -> int:
        if self._count is None:
            self._count = sum(data.count(b"\n") + (not data.endswith(b"\n"))
                              for data, _ in self._blocks(report=False))
        return self._count

    def rows(self) -> Iterator[tuple]:
        """(function, depth, start_ns, duration_ns, extra-or-None) per call."""
        for data, offset in self._blocks():
            yield from _parse_block(self._src, data, offset)

    def columns(self, names, lean: bool = False):
        """The calls as column batches (trace/colsource.py); a JSON line is
        parsed whole, so `lean` changes nothing here."""
        from .colsource import json_block
        for data, offset in self._blocks():
            cols = json_block(self._src, data, offset, names, _parse_lines)
            if cols is not None:
                yield cols

    def _blocks(self, report: bool = True) -> Iterator[tuple[bytes, int]]:
        """Whole lines of the region, a few MB at a time."""
        src = self._src
        end = self._end
        drop_partial = src.truncated and end == src.size
        with open(src.path, "rb") as f:
            f.seek(self._start)
            pos = self._start
            carry = b""
            size = CHUNK >> 4    # a small first block: the first lines show at once
            while pos < end:
                block = f.read(min(size, end - pos))
                size = CHUNK
                if not block:
                    break
                offset = pos - len(carry)
                pos += len(block)
                data = carry + block
                carry = b""
                if pos < end or drop_partial:
                    cut = data.rfind(b"\n") + 1
                    data, carry = data[:cut], data[cut:]
                if report and src.progress is not None:
                    src.progress(len(block))
                if data.strip():
                    yield data, offset


def _parse_block(src: _Source, data: bytes, offset: int) -> list[tuple]:
    matches = _CALL.findall(data)
    if len(matches) != data.count(b"\n") + (not data.endswith(b"\n")):
        return _parse_lines(src, data, offset)
    names = src.names
    rows = []
    append = rows.append
    for name, depth, start, dur, rest in matches:
        fn = names.get(name)
        if fn is None:
            try:
                fn = names[name] = json.loads(name)
            except ValueError:  # e.g. a raw control character inside the quotes
                raise TraceFormatError(f"{src.path}: malformed function name near byte {offset}") from None
        append((fn, int(depth), int(start), int(dur),
                None if rest in _PLAIN_ENDS else _extra(src, rest, offset)))
    return rows


def _extra(src: _Source, rest: bytes, offset: int) -> dict:
    text = b"{" + rest[1:].rstrip().rstrip(b",")
    for candidate in (text, text[:-2] if text.endswith(b"]}") else None):
        if candidate is None:
            break
        try:
            extra = json.loads(candidate)
        except ValueError:
            continue
        if isinstance(extra, dict):
            return extra
    raise TraceFormatError(f"{src.path}: malformed call near byte {offset}")


def _parse_lines(src: _Source, data: bytes, offset: int) -> list[tuple]:
    """Slow path: a call line the fast pattern did not match (other key order)."""
    rows = []
    for line in data.split(b"\n"):
        text = line.strip().rstrip(b",")
        if not text:
            continue
        try:
            try:
                d = json.loads(text)
            except ValueError:
                if not text.endswith(b"]}"):
                    raise
                d = json.loads(text[:-2])
            fn, depth, start, dur = d.pop("function"), d.pop("depth"), d.pop("start_ns"), d.pop("duration_ns")
            if not (isinstance(fn, str) and all(type(v) is int for v in (depth, start, dur))):
                raise TypeError
        except (ValueError, KeyError, TypeError, AttributeError):
            raise TraceFormatError(f"{src.path}: malformed call near byte {offset}") from None
        rows.append((fn, depth, start, dur, d or None))
        offset += len(line) + 1
    return rows


def load(path: str | os.PathLike) -> Trace:
    """Read a trace written by any calltrace producer, JSON or Parquet.

    Calls are not read here: ``thread.calls`` streams them from the file each
    time it is iterated. Raises TraceFormatError (one readable line) for a
    missing, empty, non-JSON or wrong-schema file; a truncated file loads with
    ``trace.truncated`` set and the calls before the cut readable.
    """
    path = os.fspath(path)
    try:
        f = open(path, "rb")
    except FileNotFoundError:
        raise TraceFormatError(f"{path}: no such file") from None
    except IsADirectoryError:
        f = None
    except OSError as e:
        raise TraceFormatError(f"{path}: cannot read: {e.strerror}") from None
    if f is None:
        if any(n.endswith(".raw") for n in os.listdir(path)):
            raise TraceFormatError(f"{path}: a folder of raw streams, not a trace yet: convert it with "
                                   f"`calltrace convert {path}`")
        raise TraceFormatError(f"{path}: is a directory, not a trace")
    with f:
        try:
            size = os.fstat(f.fileno()).st_size
            if os.path.isdir(path):
                raise IsADirectoryError
            head = f.read(8)
            if head[:4] == b"PAR1":
                from .parquet import load_parquet
                return load_parquet(path)
            if head == RAW_MAGIC:
                raise TraceFormatError(f"{path}: a raw stream, not a trace yet: convert it with "
                                       f"`calltrace convert {path}`")
            f.seek(0)
            return _load_canonical(path, f, size) or _load_whole(path, f)
        except IsADirectoryError:
            raise TraceFormatError(f"{path}: is a directory, not a trace") from None
        except OSError as e:
            raise TraceFormatError(f"{path}: cannot read: {e.strerror}") from None


class LazyThreads(Sequence):
    """The thread list of a multi-thread trace, found by scanning the file the
    first time it is needed (the plain report never needs it)."""

    def __init__(self, src: _Source, count):
        self._src = src
        self._count = count
        self._threads: list[Thread] | None = None

    def _get(self) -> list[Thread]:
        if self._threads is None:
            with open(self._src.path, "rb") as f:
                f.seek(self._src.body_start)
                self._threads = _threads(self._src, f, self._count)
        return self._threads

    def __len__(self) -> int:
        return len(self._get())

    def __getitem__(self, i):
        return self._get()[i]

    def __iter__(self):
        return iter(self._get())

    def __eq__(self, other) -> bool:
        return list(self) == list(other)

    def __repr__(self) -> str:
        return repr(self._get()) if self._threads is not None else "LazyThreads(<not read yet>)"


def _load_canonical(path: str, f, size: int) -> Trace | None:
    """The header-then-lines fast path; None when the layout is another one."""
    first = f.readline()
    if first.strip() != b"{":
        return None
    head = [first]
    nbytes = len(first)
    while True:
        line = f.readline()
        if not line:
            try:
                return _load_whole(path, f)
            except TraceFormatError:
                # Only a file that starts like a trace is a truncated one.
                second = head[1].strip()[:8] if len(head) > 1 else b""
                if not b'"format"'.startswith(second) and not second.startswith(b'"format"'):
                    raise
            return _recover_header(path, head)
        m = _THREADS_KEY.match(line)
        if m:
            break
        head.append(line)
        nbytes += len(line)
        if nbytes > _MAX_HEAD:
            return None
    try:
        doc = json.loads(b"".join(head) + b'"threads":[]}')
    except ValueError:
        return None
    trace = _header(doc, path)
    body_start = f.tell()
    f.seek(max(body_start - 1, size - 64))
    tail = f.read()
    t = _TRAILER.search(tail)
    truncated = t is None or t.group(1) is None
    body_end = size - (len(tail) - t.start()) if t else size
    src = _Source(path, size, body_start, body_end, truncated)
    trace.source = src
    if m.group(1):  # "threads":[] - no threads at all
        return trace
    count = trace.metadata.get("thread_count")
    if count == 1:
        f.seek(body_start)
        trace.threads = _threads(src, f, count)
    else:
        trace.threads = LazyThreads(src, count)
    if truncated:
        trace.truncated = True
        trace.warnings.append("truncated trace: showing the calls before the cut"
                              " (the function table is complete)")
    return trace


def _threads(src: _Source, f, count) -> list[Thread]:
    first = f.readline()
    prefix = first[:len(first) - len(first.lstrip())]
    if not first.strip() or first.lstrip().startswith(b"]") or not first.endswith(b"\n"):
        return []  # no threads, or the file ends inside the first one's opening
    heads = [(src.body_start, first)]
    if count != 1:
        heads += _find_heads(src, b"\n" + prefix + b'{"tid":')
    threads = []
    for i, (pos, line) in enumerate(heads):
        thread, has_calls = _thread_head(src, line, pos)
        start = pos + len(line)
        end = heads[i + 1][0] - 1 if i + 1 < len(heads) else src.body_end
        thread.calls = CallList(src, start, max(start, end) if has_calls else start)
        threads.append(thread)
    return threads


def _find_heads(src: _Source, pattern: bytes) -> list[tuple[int, bytes]]:
    """Positions and lines of every thread opening after the first."""
    found = []
    with open(src.path, "rb") as f:
        f.seek(src.body_start)
        pos = src.body_start
        prev = b""
        while True:
            block = f.read(CHUNK)
            if not block:
                break
            data = prev + block
            base = pos - len(prev)
            i = data.find(pattern)
            while i >= 0:
                found.append(base + i + 1)
                i = data.find(pattern, i + 1)
            pos += len(block)
            prev = data[-len(pattern):]
            if src.progress is not None:
                src.progress(len(block))
        found = sorted(set(found))
        heads = []
        for p in found:
            f.seek(p)
            line = f.readline()
            if line.endswith(b"\n"):  # else the file ends inside it
                heads.append((p, line))
    return heads


def _thread_head(src: _Source, line: bytes, pos: int) -> tuple[Thread, bool]:
    text = line.strip().rstrip(b",")
    try:
        if text.endswith(b"["):
            d, has_calls = json.loads(text + b"]}"), True
        else:
            d, has_calls = json.loads(text), False
        return Thread(d["tid"], [], d.get("name"), d.get("main", False)), has_calls
    except (ValueError, KeyError, TypeError):
        raise TraceFormatError(f"{src.path}: malformed thread entry at byte {pos}") from None


def _recover_header(path: str, head: list[bytes]) -> Trace:
    """The file ends before the calls: keep the metadata and whole functions."""
    if head and not head[-1].endswith(b"\n"):
        head = head[:-1]   # the line the file ends inside
    fi = next((i for i, line in enumerate(head) if _FUNCTIONS_KEY.match(line)), None)
    try:
        doc = json.loads(b"".join(head[:fi]) + b'"functions":[],"threads":[]}')
        if "metadata" not in doc:
            raise ValueError
    except ValueError:
        raise TraceFormatError(f"{path}: truncated trace: it ends inside the metadata, "
                               f"nothing to show") from None
    trace = _header(doc, path)
    for line in head[fi + 1:] if fi is not None else ():
        try:
            trace.functions.append(FunctionStats.from_json(json.loads(line.strip().rstrip(b","))))
        except (ValueError, KeyError, TypeError):
            break
    trace.truncated = True
    trace.warnings.append(f"truncated trace: it ends inside the function table "
                          f"({len(trace.functions)} functions readable, no calls)")
    return trace


def _header(doc: dict, path: str, with_threads: bool = False) -> Trace:
    """The trace's kind, metadata and function table; its threads too when
    the document holds them whole."""
    _check_kind(doc, path)
    try:
        threads = [Thread(t["tid"], [Call.from_json(c) for c in t["calls"]], t.get("name"),
                          t.get("main", False)) for t in doc["threads"]] if with_threads else []
        functions = [FunctionStats.from_json(x) for x in doc["functions"]]
        metadata = doc["metadata"]
        if not isinstance(metadata["total_calls"], int):
            raise TypeError("total_calls")
    except (KeyError, TypeError) as e:
        raise TraceFormatError(f"{path}: malformed trace (missing or wrong field {e})") from None
    return Trace(metadata, functions, threads, path)


def _check_kind(doc: object, where: str) -> None:
    if not isinstance(doc, dict) or doc.get("format") != "calltrace":
        raise TraceFormatError(f"{where}: not a calltrace trace (no \"format\": \"calltrace\")")
    if doc.get("version") != 1:
        raise TraceFormatError(f"{where}: unsupported trace version {doc.get('version')!r}")


def _load_whole(path: str, f) -> Trace:
    f.seek(0)
    data = f.read()
    if not data.strip():
        raise TraceFormatError(f"{path}: empty file, not a calltrace trace")
    try:
        doc = json.loads(data)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        pos = getattr(e, "pos", None)
        if pos is not None and pos >= len(data.rstrip()) - 1 and data.lstrip()[:1] == b"{":
            raise TraceFormatError(f"{path}: truncated trace (ends after {len(data)} bytes)") from None
        raise TraceFormatError(f"{path}: not JSON ({e.__class__.__name__}: {e})") from None
    except RecursionError:
        raise TraceFormatError(f"{path}: not a calltrace trace (nested too deeply)") from None
    return from_document(doc, path)


def from_document(doc: object, path: str | None = None) -> Trace:
    """A trace from an already-parsed JSON document (held in memory)."""
    trace = _header(doc, path or "trace", with_threads=True)
    trace.path = os.fspath(path) if path else None
    return trace
