"""Collapsed stacks ("folded") for flamegraph.pl, inferno and speedscope:
one line per distinct call path, ``main;parse;lex 1234`` where the number
is the self time in nanoseconds. All threads are merged."""
from __future__ import annotations

from typing import TextIO

from ..analysis.tree import call_tree, walk
from ..trace.model import Trace
from . import Options

SUFFIX = ".folded"


def frame(name: str) -> str:
    # ';' separates frames in this format; a name containing one would split.
    return name.replace(";", ":")


def write(trace: Trace, out: TextIO, options: Options) -> None:
    root = call_tree(trace.threads)
    buf = []
    for path, node in walk(root):
        self_ns = node.self_ns
        if self_ns > 0:
            buf.append(";".join(map(frame, path)) + f" {self_ns}\n")
            if len(buf) >= 4096:
                out.write("".join(buf))
                buf.clear()
    out.write("".join(buf))
