"""One self-contained HTML file: an interactive timeline (flame chart) per
thread with zoom, pan, hover details and search, and a sortable function
table. Nothing is fetched when it is opened: data, script and style are
inline. Names reach the page only as JSON data read with JSON.parse and
shown with textContent, and the JSON is written so that no ``</script>``
can end it early.

A trace larger than ``max_calls`` keeps its longest calls (every call at or
above a duration cut-off, which keeps parents with their kept children)
and says so on the page."""
from __future__ import annotations

import html
import json
from typing import TextIO

from ..analysis.render import fmt_call
from ..analysis.units import fmt_ns
from ..trace.model import Trace
from . import Options, default_title
from .html_assets import SCRIPT, STYLE

SUFFIX = ".html"
_SCRIPT_SAFE = str.maketrans({"<": "\\u003c", ">": "\\u003e", "&": "\\u0026",
                              "\u2028": "\\u2028", "\u2029": "\\u2029"})


def js(obj) -> str:
    """JSON that is safe inside a <script> element."""
    return json.dumps(obj, ensure_ascii=False, separators=(",", ":")).translate(_SCRIPT_SAFE)


def cutoff(trace: Trace, max_calls: int) -> int:
    """The smallest power-of-two duration such that the calls at least that
    long number at most ``max_calls`` (0: keep every call)."""
    if trace.metadata.get("total_calls", 0) <= max_calls:
        return 0
    counts = [0] * 65
    for t in trace.threads:
        for row in t.rows():
            counts[row[3].bit_length()] += 1
    if sum(counts) <= max_calls:
        return 0
    kept = 0
    for bits in range(64, -1, -1):
        if kept + counts[bits] > max_calls:
            return 1 << bits
        kept += counts[bits]
    return 0


def write(trace: Trace, out: TextIO, options: Options) -> None:
    md = trace.metadata
    title = options.title or default_title(trace)
    cut = cutoff(trace, options.max_calls)
    index = {f.function: i for i, f in enumerate(trace.functions)}
    functions = [[f.function, f.calls, f.total_ns, f.self_ns, f.min_ns, f.max_ns]
                 for f in trace.functions]
    meta = [["program", md.get("program")], ["command", " ".join(md.get("argv") or [])],
            ["started", md.get("start_time")], ["duration", fmt_ns(md.get("duration_ns") or 0)],
            ["calls", str(md.get("total_calls"))], ["threads", str(md.get("thread_count"))],
            ["end", f"{md.get('termination')} (status {md.get('exit_status')})"],
            ["backend", md.get("backend")]]
    out.write("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\n"
              "<meta http-equiv=\"Content-Security-Policy\" content=\"default-src 'none'; "
              "script-src 'unsafe-inline'; style-src 'unsafe-inline'\">\n"
              f"<title>{html.escape(title)} - calltrace</title>\n<style>{STYLE}</style></head>\n"
              "<body>\n<script id=\"data\" type=\"application/json\">")
    out.write('{"title":' + js(title) + ',"meta":' + js(meta) + ',"cutoff":' + str(cut)
              + ',"total":' + str(md.get("total_calls", 0)) + ',"threads":[')
    shown = 0
    for n, t in enumerate(trace.threads):
        label = f"thread {t.tid}" + (" [main]" if t.main else "") + (f" {t.name}" if t.name else "")
        out.write(("," if n else "") + '{"label":' + js(label) + ',"calls":[')
        buf = []
        extras = {}
        k = 0
        for fn, depth, start, dur, extra in t.rows():
            if dur < cut:
                continue
            fi = index.get(fn)
            if fi is None:
                fi = index[fn] = len(functions)
                functions.append([fn, 0, 0, 0, 0, 0])
            buf.append(f"{',' if k else ''}{fi},{depth},{start},{dur}")
            if extra:
                extras[k] = fmt_call(fn, extra)
            k += 1
            if len(buf) >= 8192:
                out.write("".join(buf))
                buf.clear()
        out.write("".join(buf) + '],"extra":' + js(extras) + "}")
        shown += k
    out.write('],"shown":' + str(shown) + ',"functions":' + js(functions) + "}</script>\n")
    out.write(f"<script>{SCRIPT}</script>\n</body></html>\n")
