"""The measuring pass while the program runs (runtime/live.c): with Parquet
output, `calltrace run` walks the main thread's events as the runtime seals
them, on a core the program leaves idle, so that after the program only the
rest is measured before the trace is written. The result is the same trace:
convert() finishes the measure (or, when the walk so far cannot be used,
measures from scratch)."""
from __future__ import annotations

import os
import threading
from typing import TYPE_CHECKING

from ..errors import CalltraceError

if TYPE_CHECKING:
    from .raw import RawStream

STEP = 0.02          # seconds between steps: the runtime seals a segment per chunk filled


def useful(output: str, rolling: bool) -> bool:
    """Worth it: Parquet output (JSON needs the functions' tables before the
    calls, and they need the clock's final rate), no rolling parts, and a
    second core, so that the walk never takes the program's."""
    return output.endswith((".parquet", ".pq", "/")) and not rolling and len(os.sched_getaffinity(0)) > 1


class Live(threading.Thread):
    """Measures `<raw_dir>/<pid>.raw` until stop(), which hands the stream over."""

    def __init__(self, raw_dir: str, pid: int):
        super().__init__(daemon=True, name="calltrace-live")
        self.path = os.path.join(raw_dir, f"{pid}.raw")
        self._stream: RawStream | None = None
        self._halt = threading.Event()

    def run(self) -> None:
        # Imported here: `calltrace run` starts the program before loading the converter.
        from .raw import RawStream
        try:
            # Below the program in the scheduler's eyes: it only uses spare time.
            os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), 10)
        except OSError:
            pass
        while not self._halt.wait(STEP):
            if self._stream is None:
                try:
                    self._stream = RawStream(self.path, live=True)
                except (CalltraceError, OSError):
                    continue     # not written yet
            if self._stream.step() < 0:
                return

    def stop(self) -> dict[str, RawStream]:
        """Stop stepping; the stream opened, by path, for convert()."""
        self._halt.set()
        if self.is_alive():
            self.join()
        return {self.path: self._stream} if self._stream is not None else {}
