"""Chrome Trace Event Format (JSON object form) for Perfetto and
chrome://tracing: one complete ("X") event per call, metadata ("M") events
naming the process and threads. Timestamps are microseconds with three
decimals, so nanoseconds survive exactly and nesting is kept."""
from __future__ import annotations

import json
from typing import TextIO

from ..analysis.render import fmt_value
from ..trace.model import Trace
from . import Options, default_title

SUFFIX = ".chrome.json"


def us(ns: int) -> str:
    """Nanoseconds as an exact decimal count of microseconds."""
    return f"{ns // 1000}.{ns % 1000:03d}"


def _args(extra: dict | None) -> str:
    if not extra:
        return ""
    a = {}
    for v in extra.get("args") or []:
        a[v.get("name") or f"arg{len(a)}"] = fmt_value(v)
    if extra.get("return") is not None:
        a["return"] = fmt_value(extra["return"])
    for flag in ("incomplete", "unwound"):
        if extra.get(flag):
            a[flag] = True
    if extra.get("args_note"):
        a["args_note"] = extra["args_note"]
    return ',"args":' + json.dumps(a, ensure_ascii=False) if a else ""


def write(trace: Trace, out: TextIO, options: Options) -> None:
    md = trace.metadata
    pid = md.get("pid") or 0
    dump = json.dumps
    out.write('{"traceEvents":[\n')
    out.write(dump({"ph": "M", "pid": pid, "tid": trace.threads[0].tid if trace.threads else 0,
                    "name": "process_name", "args": {"name": options.title or default_title(trace)}}))
    from ..trace.colsource import Names, columns
    from ..trace.kernels import Formatter
    from ..analysis.view import selection
    names = Names(f.function for f in trace.functions)
    for t in trace.threads:
        name = t.name or ("main" if t.main else f"thread {t.tid}")
        out.write(",\n" + dump({"ph": "M", "pid": pid, "tid": t.tid, "name": "thread_name",
                                "args": {"name": name}}, ensure_ascii=False))
        head = f',\n{{"ph":"X","pid":{pid},"tid":{t.tid},"cat":"call","name":'
        # A filtered view (export -F/-N/-t) is selected by the kernel itself.
        thread, flt, budget = selection(t)
        fmt = Formatter(Formatter.CHROME, names, flt,
                        prefix=lambda fn: (head + dump(fn, ensure_ascii=False) + ',"ts":').encode(
                            "utf-8", "backslashreplace"))
        for piece in fmt.run(columns(thread, names)):
            if isinstance(piece, tuple):
                c, i, _ = piece
                start, dur = int(c.start[i]), int(c.dur[i])
                out.write(f'{head}{dump(names.names[c.func[i]], ensure_ascii=False)},"ts":{us(start)},'
                          f'"dur":{us(dur)}{_args(c.extra(i))}}}')
            else:
                out.write(piece.decode("utf-8", "backslashreplace"))
            if budget is not None:
                budget.check(budget.seen + fmt.shown)
        if budget is not None:
            budget.seen += fmt.shown
    other = {k: v for k, v in md.items() if isinstance(v, (str, int, float)) and not isinstance(v, bool)}
    other["exporter"] = "calltrace"
    out.write('\n],\n"displayTimeUnit":"ns",\n"otherData":' + dump(other, ensure_ascii=False) + "}\n")
