"""speedscope's file format (https://www.speedscope.app/file-format-schema.json):
one "evented" profile per thread, open/close events at each call's start
and end, times in nanoseconds, written by a native kernel (trace/events.Events)."""
from __future__ import annotations

import json
from typing import TextIO

from ..trace.model import Trace
from . import Options, default_title

SUFFIX = ".speedscope.json"
SCHEMA = "https://www.speedscope.app/file-format-schema.json"


def write(trace: Trace, out: TextIO, options: Options) -> None:
    from ..analysis.view import selection
    from ..trace.colsource import Names, columns
    from ..trace.events import Events
    frames: dict[str, int] = {f.function: i for i, f in enumerate(trace.functions)}
    files = {f.function: (f.file, f.line) for f in trace.functions}
    names = Names(f.function for f in trace.functions)
    out.write('{"$schema":"' + SCHEMA + '",\n"profiles":[')
    kernel = None
    try:
        for n, t in enumerate(trace.threads):
            name = t.name or ("main" if t.main else f"thread {t.tid}")
            out.write(("," if n else "") + '\n{"type":"evented","name":'
                      + json.dumps(f"{name} (tid {t.tid})", ensure_ascii=False)
                      + ',"unit":"nanoseconds","events":[')
            thread, flt, budget = selection(t)
            # Events never step back in time, even in a trace whose child
            # outlasts its parent (the kernel clamps them).
            kernel = kernel or Events(names, flt, frames, len(frames))
            for piece in kernel.speedscope(columns(thread, names, lean=True)):
                out.write(piece.decode("ascii"))
                if budget is not None:
                    budget.check(budget.seen + kernel.shown)
            if budget is not None:
                budget.seen += kernel.shown
            first_at, last_at, _ = kernel.thread()
            out.write(f'],"startValue":{first_at},"endValue":{last_at}}}')
        frames = kernel.index() if kernel else frames
    finally:
        if kernel is not None:
            kernel.close()
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
