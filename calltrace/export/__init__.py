"""Exporters: one module per format, each with ``SUFFIX`` and
``write(trace, out, options)`` writing to ``out`` as it reads calls: text,
or bytes for the modules that set ``BINARY``. ``TIMELINE`` formats write
every call and are held to the export size guard."""
from __future__ import annotations

import importlib
from dataclasses import dataclass
from types import ModuleType

FORMATS = ("chrome", "perfetto", "speedscope", "folded", "svg", "html", "parquet")
TIMELINE = ("chrome", "perfetto", "speedscope")


@dataclass(frozen=True)
class Options:
    title: str | None = None        # shown in SVG/HTML; default: the program's name
    width: int = 1200               # SVG width in pixels
    max_calls: int = 200_000        # HTML: calls kept for the timeline (longest first)


def module(fmt: str) -> ModuleType:
    if fmt not in FORMATS:
        raise ValueError(fmt)
    return importlib.import_module(f"{__name__}.{fmt}")


def default_title(trace) -> str:
    import os
    program = trace.metadata.get("program") or "trace"
    return os.path.basename(program) or program
