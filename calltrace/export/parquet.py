"""The trace itself in its Parquet encoding (docs/FORMAT.md): one row per
call, the header in the footer. Readable by calltrace and any Parquet reader."""
from __future__ import annotations

from typing import BinaryIO

from ..trace.model import Trace
from . import Options

SUFFIX = ".parquet"
BINARY = True


def write(trace: Trace, out: BinaryIO, options: Options) -> None:
    import pyarrow as pa
    from ..trace.columns import write_trace
    write_trace(pa.PythonFile(out, mode="w"), trace)
