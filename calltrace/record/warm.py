"""What converting will need, done while the program runs: its ELF symbols
and DWARF function table (symbols/cache.py hands them to the converter, which
waits for them if they are not ready), the converter's modules and, for
Parquet output, pyarrow. All of it would otherwise be done after the program
ends, in the time the user waits for the trace."""
from __future__ import annotations

import os
import threading

PARQUET = (".parquet", ".pq", "/")     # trace/columns.py's names and a dataset folder


def start(program: str, output: str) -> None:
    """Read `program`'s tables in a daemon thread; the converter meets any
    error again and reports it."""
    # The runtime records the executable's real path; the tables are cached by path.
    path = os.path.realpath(program)
    threading.Thread(target=_warm, args=(path, output.endswith(PARQUET)), name="calltrace-warm",
                     daemon=True).start()


def _warm(path: str, parquet: bool) -> None:
    try:
        from . import collect  # noqa: F401  (the converter, for after the run)
        from ..symbols.dwarf import dwarf_functions
        from ..symbols.elf import elf_symbols
        if parquet:
            from ..trace import columns  # noqa: F401  (imports pyarrow)
        elf_symbols(path)
        dwarf_functions(path)
    except Exception:
        pass
