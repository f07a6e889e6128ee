"""speedscope's file format (https://www.speedscope.app/file-format-schema.json):
one "evented" profile per thread, open/close events at each call's start
and end, times in nanoseconds."""
from __future__ import annotations

import json
from typing import TextIO

from ..trace.model import Trace
from . import Options, default_title

SUFFIX = ".speedscope.json"
SCHEMA = "https://www.speedscope.app/file-format-schema.json"


def write(trace: Trace, out: TextIO, options: Options) -> None:
    frames: dict[str, int] = {f.function: i for i, f in enumerate(trace.functions)}
    files = {f.function: (f.file, f.line) for f in trace.functions}
    out.write('{"$schema":"' + SCHEMA + '",\n"profiles":[')
    for n, t in enumerate(trace.threads):
        name = t.name or ("main" if t.main else f"thread {t.tid}")
        out.write(("," if n else "") + '\n{"type":"evented","name":'
                  + json.dumps(f"{name} (tid {t.tid})", ensure_ascii=False)
                  + ',"unit":"nanoseconds","events":[')
        first_at = last_at = None
        stack: list[tuple[int, int]] = []   # (frame, end)
        buf: list[str] = []

        def close() -> None:
            nonlocal last_at
            fr, end = stack.pop()
            # Events must never step back in time, even in a trace whose
            # child outlasts its parent.
            last_at = max(end, last_at)
            buf.append(f',\n{{"type":"C","frame":{fr},"at":{last_at}}}')

        for fn, depth, start, dur, _ in t.rows():
            while len(stack) > depth:
                close()
            fr = frames.get(fn)
            if fr is None:
                fr = frames[fn] = len(frames)
            at = start if last_at is None else max(start, last_at)
            if first_at is None:
                first_at = at
            buf.append(f'{"," if last_at is not None else ""}\n{{"type":"O","frame":{fr},"at":{at}}}')
            last_at = at
            stack.append((fr, max(at, start + dur)))
            if len(buf) >= 8192:
                out.write("".join(buf))
                buf.clear()
        while stack:
            close()
        out.write("".join(buf))
        out.write(f'],"startValue":{first_at or 0},"endValue":{last_at or 0}}}')
    shared = []
    for fn, i in sorted(frames.items(), key=lambda kv: kv[1]):
        f = {"name": fn}
        file, line = files.get(fn, (None, None))
        if file:
            f["file"] = file
            if line:
                f["line"] = line
        shared.append(f)
    out.write('\n],\n"shared":{"frames":' + json.dumps(shared, ensure_ascii=False)
              + '},\n"name":' + json.dumps(options.title or default_title(trace), ensure_ascii=False)
              + ',\n"activeProfileIndex":0,\n"exporter":"calltrace"}\n')
