"""One self-contained HTML file: an interactive timeline (flame chart) per
thread with zoom, pan, hover details and search, and a sortable function
table. Nothing is fetched when it is opened: data, script and style are
inline. Names reach the page only as JSON data read with JSON.parse and
shown with textContent, and the JSON is written so that no ``</script>``
can end it early.

A trace larger than ``max_calls`` keeps about that many of its longest
calls for the timeline (see Budget) and says so on the page; the function
table always covers every call. The timeline's rows and the histogram that
sets the budget are written by native kernels (trace/events.Events); calls
with captured values come back to Python to be described (fmt_call)."""
from __future__ import annotations

import html
import json
from typing import NamedTuple, TextIO

from ..analysis.render import fmt_call
from ..units import fmt_ns
from ..trace.model import Trace
from . import Options, default_title
from .html_assets import SCRIPT, STYLE

SUFFIX = ".html"
_SCRIPT_SAFE = str.maketrans({"<": "\\u003c", ">": "\\u003e", "&": "\\u0026",
                              "\u2028": "\\u2028", "\u2029": "\\u2029"})


def js(obj) -> str:
    """JSON that is safe inside a <script> element."""
    return json.dumps(obj, ensure_ascii=False, separators=(",", ":")).translate(_SCRIPT_SAFE)


class Budget(NamedTuple):
    """Which calls the timeline keeps: every call lasting at least ``full``
    ns, and the first ``quota`` (in call order) of those lasting at least
    ``floor``. Both sets keep every kept call's callers, since a caller
    lasts at least as long as its callees and comes before them."""
    floor: int = 0
    full: int = 0
    quota: int = 0


def budget(trace: Trace, max_calls: int) -> Budget:
    if trace.metadata.get("total_calls", 0) <= max_calls:
        return Budget()
    import numpy as np
    from ..analysis.view import selection
    from ..trace.colsource import Names, columns
    from ..trace.events import histogram
    names = Names()
    counts = np.zeros(65, np.uint64)     # calls per power-of-two duration bucket (bit length)
    for t in trace.threads:
        thread, flt, _ = selection(t)
        histogram(columns(thread, names, lean=True), names, flt, counts)
    counts = counts.tolist()
    if sum(counts) <= max_calls:
        return Budget()
    kept = 0
    for bits in range(64, -1, -1):
        if kept + counts[bits] > max_calls:
            return Budget(1 << (bits - 1) if bits else 0, 1 << bits, max_calls - kept)
        kept += counts[bits]
    return Budget()


def write(trace: Trace, out: TextIO, options: Options) -> None:
    from ..analysis.view import selection
    from ..trace.colsource import Names, columns
    from ..trace.events import Events
    md = trace.metadata
    title = options.title or default_title(trace)
    keep = budget(trace, options.max_calls)
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
    out.write('{"title":' + js(title) + ',"meta":' + js(meta) + ',"floor":' + str(keep.floor) + ',"full":' + str(keep.full)
              + ',"total":' + str(md.get("total_calls", 0)) + ',"threads":[')
    shown = 0
    names = Names(f.function for f in trace.functions)
    kernel = None
    try:
        for n, t in enumerate(trace.threads):
            label = f"thread {t.tid}" + (" [main]" if t.main else "") + (f" {t.name}" if t.name else "")
            out.write(("," if n else "") + '{"label":' + js(label) + ',"calls":[')
            thread, flt, _ = selection(t)
            if kernel is None:
                # the quota of calls kept above the floor runs over all threads
                kernel = Events(names, flt, index, len(functions))
                kernel.budget(*keep)
            extras = {}
            for piece in kernel.html(columns(thread, names)):
                if isinstance(piece, tuple):
                    c, i, k = piece
                    extras[k] = fmt_call(names.names[c.func[i]], c.extra(i))
                else:
                    out.write(piece.decode("ascii"))
            out.write('],"extra":' + js(extras) + "}")
            shown += kernel.shown
            kernel.thread()
        added = sorted((i, fn) for fn, i in kernel.index().items() if i >= len(functions)) if kernel else []
    finally:
        if kernel is not None:
            kernel.close()
    functions.extend([fn, 0, 0, 0, 0, 0] for _, fn in added)
    out.write('],"shown":' + str(shown) + ',"functions":' + js(functions) + "}</script>\n")
    out.write(f"<script>{SCRIPT}</script>\n</body></html>\n")
