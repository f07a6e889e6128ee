"""The instrumented shared libraries a program loads at start-up.

Argument capture plans the executable and these libraries (plan.py): the
dynamic loader is asked which libraries it would load (`ld.so --list`, what
ldd does: the program's own code does not run), with the environment the
program gets, so LD_LIBRARY_PATH, RUNPATH and the loader's cache all count.
Libraries loaded later with dlopen() are not in the list."""
from __future__ import annotations

import os
import re
import subprocess
from functools import lru_cache

from elftools.common.exceptions import ELFError
from elftools.elf.elffile import ELFFile

from .elf import is_instrumented

# "\tlibfoo.so => /path/libfoo.so (0x...)"; a library not found says "not found".
_LINE = re.compile(r"^\s*\S+ => (/.*) \(0x[0-9a-f]+\)$", re.M)


def _interpreter(path: str) -> str | None:
    try:
        with open(path, "rb") as f:
            for seg in ELFFile(f).iter_segments():
                if seg["p_type"] == "PT_INTERP":
                    return seg.get_interp_name()
    except (OSError, ELFError, ValueError):
        pass
    return None


def loaded_libraries(program: str) -> list[str]:
    """Real paths of the shared libraries `program` loads at start-up, in
    the loader's order, with this process's environment (the one the
    program gets); [] for a static program or when the loader fails."""
    return list(_loaded(program))


@lru_cache(maxsize=16)
def _loaded(program: str) -> tuple[str, ...]:
    # `calltrace run` asks once for the capture plan and once for the filter.
    interp = _interpreter(program)
    if interp is None or not os.access(interp, os.X_OK):
        return ()
    env = {k: v for k, v in os.environ.items() if k not in ("LD_PRELOAD", "LD_TRACE_LOADED_OBJECTS", "LD_AUDIT")}
    try:
        proc = subprocess.run([interp, "--list", program], env=env, stdin=subprocess.DEVNULL,
                              capture_output=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return ()
    # Whatever the status (a missing library makes it 1; a loader run under
    # valgrind may report its own errors), the lines found are real.
    out: dict[str, None] = {}
    for m in _LINE.finditer(proc.stdout.decode("utf-8", "surrogateescape")):
        out.setdefault(os.path.realpath(m.group(1)))
    return tuple(out)


def instrumented_libraries(program: str) -> list[str]:
    return [p for p in loaded_libraries(program) if is_instrumented(p)]
