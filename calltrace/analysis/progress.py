"""A progress bar (tqdm, on stderr) for reading calls, shown only when the
read takes more than about a second (CALLTRACE_PROGRESS_DELAY) and stderr is
a terminal."""
from __future__ import annotations

import contextlib
import os
import sys
from typing import Iterator

from ..trace.model import Trace


@contextlib.contextmanager
def reading(trace: Trace, what: str = "reading calls", passes: int = 1) -> Iterator[None]:
    src = trace.source
    if src is None or not sys.stderr.isatty():
        yield
        return
    import shutil
    from tqdm import tqdm
    # A terminal that reports no size (a bare pty) would get an empty bar.
    size = shutil.get_terminal_size((80, 24))
    total = max(0, src.body_end - src.body_start) * passes
    bar = tqdm(total=total, unit="B", unit_scale=True, desc=what, delay=_delay(), leave=False,
               file=sys.stderr, ncols=size.columns or 80, nrows=size.lines or 24)
    src.progress = bar.update
    try:
        yield
    finally:
        src.progress = None
        bar.close()


def _delay() -> float:
    """Seconds a read runs before its bar shows: CALLTRACE_PROGRESS_DELAY
    (default 1; 0 shows it at once)."""
    try:
        return max(0.0, float(os.environ.get("CALLTRACE_PROGRESS_DELAY", "1")))
    except ValueError:
        return 1.0


def warn(trace: Trace) -> None:
    """Say on stderr what is wrong with a trace that could still be read."""
    for w in trace.warnings:
        print(f"calltrace: warning: {trace.path}: {w}", file=sys.stderr)
