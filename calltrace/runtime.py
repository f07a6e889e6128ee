"""Where the runtime libraries live, the environment that drives them, and
the files Python hands them (the capture plan, the record-time filter; their
layouts are calltrace/bridge.py's).

The CLI talks to the runtime only through environment variables and
LD_PRELOAD (see docs/RUNTIME.md for every CALLTRACE_* variable)."""
from __future__ import annotations

import os
from pathlib import Path

from .errors import CalltraceError

_DIR = Path(__file__).resolve().parent / "_runtime"


def _find(name: str) -> str:
    path = _DIR / name
    if not path.is_file():
        raise CalltraceError(f"the calltrace runtime is not built ({path} is missing): "
                             "install calltrace with `pip install .` from a source checkout")
    return str(path)


def library_path() -> str:
    """Absolute path of libcalltrace.so, the preloaded recorder."""
    return _find("libcalltrace.so")


def converter_path() -> str:
    """Absolute path of libcalltrace-convert.so (raw stream -> JSON)."""
    return _find("libcalltrace-convert.so")


_converter = None


def converter_library():
    """libcalltrace-convert.so loaded once, its functions typed by bridge.py
    (the raw reader and the post-mortem kernels share it)."""
    global _converter
    if _converter is None:
        import ctypes
        from .bridge import bind_converter
        _converter = bind_converter(ctypes.CDLL(converter_path()))
    return _converter


def preload_env(base: dict[str, str], lib: str) -> dict[str, str]:
    """`base` with `lib` first in LD_PRELOAD (keeping what the user had)."""
    env = dict(base)
    old = env.get("LD_PRELOAD", "").strip()
    env["LD_PRELOAD"] = f"{lib} {old}".strip() if old else lib
    return env


def clean_env(base: dict[str, str] | None = None) -> dict[str, str]:
    """`base` without our variables, for processes that must not be traced."""
    env = dict(os.environ if base is None else base)
    for k in list(env):
        if k.startswith("CALLTRACE_"):
            del env[k]
    env.pop("LD_PRELOAD", None)
    return env


def write_plan(program: str, output: str, library: bool = False) -> int:
    """The argument-capture plan of `program` and its instrumented libraries
    (CALLTRACE_PLAN), or with `library` of that one shared library alone (one
    the program dlopen'ed: the runtime adds it to the plan it has); returns
    the number of functions it covers."""
    from .symbols.plan import ProgramPlan, capture_plan, program_plan
    real = os.path.realpath(program)
    plan = ProgramPlan([capture_plan(real)]) if library else program_plan(real)
    try:
        with open(output, "wb") as f:
            f.write(plan.serialize())
    except OSError as e:
        raise CalltraceError(f"cannot write {output}: {e.strerror}") from None
    return len(plan.ordered())


def write_filter(program: str, sel, output: str) -> int:
    """The record-time filter of `program` for a symbols.select.Selection
    (CALLTRACE_FILTER); returns how many functions the including expression
    (or, without one, the excluding one) selected."""
    from . import bridge
    from .symbols.select import modules
    mods = modules(program, sel)
    bridge.write_filter(output, sel.mode, mods)
    return sum(len(inc) if sel.include is not None else len(exc) for _, inc, exc in mods)
