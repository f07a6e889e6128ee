"""``calltrace filter``: the functions of a program, and of the instrumented
libraries it loads at start-up, that a regular expression selects, as the
runtime's record-time filter file (runtime/filter.c reads it).

`calltrace run --function/--exclude` calls write_filter directly; the
runtime runs this command under a bare LD_PRELOAD with CALLTRACE_FUNCTION or
CALLTRACE_EXCLUDE."""
from __future__ import annotations

import os
import re
import struct

from ..errors import CalltraceError
from ..symbols.demangle import demangle
from ..symbols.elf import elf_symbols

NAME = "filter"
ORDER = 96
HELP = "write the record-time filter file for PROGRAM (used by the runtime)"
INCLUDE, EXCLUDE = 1, 2


def add_arguments(p) -> None:
    p.add_argument("program")
    g = p.add_mutually_exclusive_group(required=True)
    g.add_argument("--function", metavar="REGEX")
    g.add_argument("--exclude", metavar="REGEX")
    p.add_argument("output")


def compile_regex(text: str, option: str) -> re.Pattern:
    try:
        return re.compile(text)
    except re.error as e:
        raise CalltraceError(f"{option} {text!r} is not a valid regular expression: {e}") from None


def matching(program: str, pattern: re.Pattern) -> list[int]:
    """Entry addresses of the functions whose (demangled) name matches."""
    syms = elf_symbols(program).functions()
    readable = demangle([s.name for s in syms])
    return sorted({s.start for s in syms
                   if pattern.search(s.name) or pattern.search(readable.get(s.name, s.name))})


def write_filter(program: str, pattern: re.Pattern, mode: int, output: str,
                 libraries: list[str] | None = None) -> int:
    """Returns the number of functions selected. `libraries`: the
    instrumented libraries to cover (default: those loaded at start-up)."""
    from ..symbols.libraries import instrumented_libraries
    exe = os.path.realpath(program)
    parts, total = [], 0
    if libraries is None:
        libraries = instrumented_libraries(exe)
    for path in [exe] + [p for p in libraries if p != exe]:
        addrs = matching(path, pattern)
        total += len(addrs)
        name = os.fsencode(path)
        parts.append(struct.pack("<I", len(name)) + name + struct.pack("<I", len(addrs)) +
                     b"".join(struct.pack("<Q", a) for a in addrs))
    try:
        with open(output, "wb") as f:
            f.write(b"CTFILT02" + struct.pack("<II", mode, len(parts)) + b"".join(parts))
    except OSError as e:
        raise CalltraceError(f"cannot write {output}: {e.strerror}") from None
    return total


def run(args) -> int:
    if args.function is not None:
        write_filter(args.program, compile_regex(args.function, "--function"), INCLUDE, args.output)
    else:
        write_filter(args.program, compile_regex(args.exclude, "--exclude"), EXCLUDE, args.output)
    return 0
