"""Many traces as one dataset (docs/FORMAT.md, "Datasets").

A dataset is a folder of Parquet traces laid out Hive-style,
``host=<hostname>/pid=<pid>/calls.parquet`` (an exec'd image of the same
process: ``calls.exec<N>.parquet``), so DuckDB, Spark, Trino or ClickHouse
read it with ``host`` and ``pid`` as partition columns. Any folder of
traces, or a list of files, in either encoding, is read the same way here."""
from __future__ import annotations

import os
import re

from ..errors import TraceFormatError

FILE = "calls.parquet"
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]")


def member(folder: str, host: str, pid: int, image: int = 0) -> str:
    """Where one process image's trace goes inside a dataset folder."""
    name = FILE if not image else f"calls.exec{image}.parquet"
    return os.path.join(folder, f"host={_UNSAFE.sub('_', host) or 'unknown'}", f"pid={pid}", name)


def is_dataset_name(path: str) -> bool:
    """`-o DIR/` (a trailing slash) names a dataset."""
    return path.endswith("/")


def expand(paths: list[str]) -> list[str]:
    """Files named, and the traces (*.parquet, *.json) inside folders named,
    in a stable order."""
    out = []
    for p in paths:
        if os.path.isdir(p):
            found = []
            for root, dirs, files in os.walk(p):
                dirs.sort()
                found += [os.path.join(root, f) for f in sorted(files)
                          if f.endswith((".parquet", ".json")) and not f.startswith(".")]
            if not found:
                raise TraceFormatError(f"{p}: a folder with no traces (*.parquet, *.json) in it")
            out += found
        elif not os.path.exists(p):
            raise TraceFormatError(f"{p}: no such file")
        else:
            out.append(p)
    return out


def split(paths: list[str]) -> tuple[list[str], list[str]]:
    """(Parquet traces, other traces)."""
    from .columns import is_parquet_file
    pq, other = [], []
    for p in paths:
        (pq if is_parquet_file(p) else other).append(p)
    return pq, other
