"""A flame graph drawn by calltrace itself: the aggregated call tree (all
threads merged), the outermost calls at the bottom, width proportional to
total time. Hover a box for its numbers. Every name is XML-escaped."""
from __future__ import annotations

import zlib
from typing import TextIO
from xml.sax.saxutils import escape

from ..analysis.tree import Node, call_tree
from ..units import fmt_ns
from ..trace.model import Trace
from . import Options, default_title

SUFFIX = ".svg"
ROW = 17
FONT = 12
CHAR = 7.0       # average glyph width at FONT px, for fitting labels
MIN_PX = 0.3     # narrower boxes are not drawn (nor their children)
TOP = 40
PAD = 10


def colour(name: str) -> str:
    """A stable warm colour per name, as flamegraph.pl does."""
    h = zlib.crc32(name.encode("utf-8", "surrogatepass"))
    return f"rgb({205 + h % 50},{(h >> 8) % 150 + 50},{(h >> 16) % 55})"


def _layout(root: Node, width: float) -> tuple[list[tuple], int]:
    """(x, depth, width, node) per drawn box; iterative for deep traces."""
    boxes = []
    scale = width / root.total_ns if root.total_ns else 0.0
    todo = [(0.0, -1, root)]
    max_depth = 0
    while todo:
        x, depth, node = todo.pop()
        w = node.total_ns * scale
        if depth >= 0:
            boxes.append((x, depth, w, node))
            max_depth = max(max_depth, depth)
        cx = x
        for child in sorted(node.children.values(), key=lambda n: n.name):
            cw = child.total_ns * scale
            if cw >= MIN_PX:
                todo.append((cx, depth + 1, child))
            cx += cw
    return boxes, max_depth


def write(trace: Trace, out: TextIO, options: Options) -> None:
    root = call_tree(trace.threads)
    width = max(200, options.width)
    inner = width - 2 * PAD
    boxes, max_depth = _layout(root, inner)
    height = TOP + (max_depth + 1) * ROW + 2 * PAD
    title = options.title or default_title(trace)
    total = root.total_ns or 1
    out.write(f'<?xml version="1.0" encoding="UTF-8" standalone="no"?>\n'
              f'<svg xmlns="http://www.w3.org/2000/svg" version="1.1" width="{width}" '
              f'height="{height}" viewBox="0 0 {width} {height}" font-family="Verdana, sans-serif" '
              f'font-size="{FONT}">\n'
              f'<rect x="0" y="0" width="{width}" height="{height}" fill="#fdfdf6"/>\n'
              f'<text x="{width / 2:.1f}" y="22" text-anchor="middle" font-size="16">'
              f'{escape(title)} - flame graph ({len(boxes)} boxes, {fmt_ns(root.total_ns)})</text>\n')
    buf = []
    for x, depth, w, node in boxes:
        y = height - PAD - (depth + 1) * ROW
        pct = 100.0 * node.total_ns / total
        tip = (f"{node.name} ({node.calls} calls, total {fmt_ns(node.total_ns)}, "
               f"self {fmt_ns(node.self_ns)}, {pct:.2f}%)")
        buf.append(f'<g class="f"><title>{escape(tip)}</title>'
                   f'<rect x="{PAD + x:.2f}" y="{y}" width="{w:.2f}" height="{ROW - 1}" '
                   f'fill="{colour(node.name)}" rx="2"/>')
        fits = int((w - 6) / CHAR)
        if fits >= 3:
            label = node.name if len(node.name) <= fits else node.name[:fits - 2] + ".."
            buf.append(f'<text x="{PAD + x + 3:.2f}" y="{y + ROW - 5}">{escape(label)}</text>')
        buf.append("</g>\n")
        if len(buf) >= 3000:
            out.write("".join(buf))
            buf.clear()
    out.write("".join(buf))
    out.write("</svg>\n")


