"""Options shared by the commands that launch a program (run, debug), and the
rule that lets them follow the program path: long options of ours are taken
from anywhere before `--`; everything after `--` goes to the program."""
from __future__ import annotations

import argparse
import os
import shutil

from ..errors import CalltraceError


def positive_int(text: str) -> int:
    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if v < 1:
        raise argparse.ArgumentTypeError(f"{text!r} must be 1 or more")
    return v


def duration(text: str) -> int:
    """'10us' -> 10000 (nanoseconds); units ns, us, ms, s; a bare number is ns."""
    import re
    m = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*(ns|us|ms|s)?\s*", text)
    if not m:
        raise argparse.ArgumentTypeError(f"{text!r} is not a duration (like 10us, 2ms, 500ns)")
    scale = {"ns": 1, None: 1, "us": 1_000, "ms": 1_000_000, "s": 1_000_000_000}[m.group(2)]
    return int(float(m.group(1)) * scale)


def size(text: str) -> int:
    """'500M' -> 524288000 (bytes); K, M, G, T are powers of 1024, with an
    optional B or iB; a bare number is bytes. The runtime's CALLTRACE_MAX_SIZE
    reads the same forms (runtime/config.c)."""
    import re
    m = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*(?:([kKmMgGtT])(?:i?B)?|B)?\s*", text)
    if not m:
        raise argparse.ArgumentTypeError(f"{text!r} is not a size (like 500M, 2G, 64K)")
    power = " KMGT".index(m.group(2).upper()) if m.group(2) else 0
    value = int(float(m.group(1)) * 1024 ** power)
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r} must be more than 0 bytes")
    return value


def add_output(p: argparse.ArgumentParser, default: str = "calltrace.json") -> None:
    p.add_argument("-o", "--output", metavar="PATH", default=None,
                   help=f"where to write the trace (default: $CALLTRACE_OUTPUT or {default})")


def add_format(p: argparse.ArgumentParser) -> None:
    g = p.add_mutually_exclusive_group()
    g.add_argument("--pretty", dest="pretty", action="store_true", default=None,
                   help="indent the JSON (CALLTRACE_PRETTY_JSON=1)")
    g.add_argument("--compact", dest="pretty", action="store_false",
                   help="compact JSON, one call per line (default)")


def add_command(p: argparse.ArgumentParser) -> None:
    p.add_argument("command", nargs=argparse.REMAINDER, metavar="PROGRAM [ARGS...]",
                   help="the program and its arguments; put its own options after --")


def _value_options(parser: argparse.ArgumentParser) -> tuple[set[str], set[str]]:
    takes, flags = set(), set()
    for a in parser._actions:
        for s in a.option_strings:
            if s.startswith("--") and s != "--help":
                (takes if a.nargs != 0 else flags).add(s)
    return takes, flags


def parse_command(parser: argparse.ArgumentParser, args: argparse.Namespace) -> list[str]:
    """Split `args.command` into the program's argv, re-parsing any of our long
    options found between the program path and `--` into `args`."""
    tokens = list(args.command)
    if tokens and tokens[0] == "--":
        tokens.pop(0)
    if not tokens:
        parser.error("no program given: calltrace %s [OPTIONS] PROGRAM [ARGS...]" % parser.prog.split()[-1])
    takes, flags = _value_options(parser)
    ours: list[str] = []
    program = [tokens[0]]
    i = 1
    while i < len(tokens):
        tok = tokens[i]
        if tok == "--":
            program.extend(tokens[i + 1:])
            break
        name = tok.split("=", 1)[0]
        if name in flags and "=" not in tok:
            ours.append(tok)
        elif name in takes:
            ours.append(tok)
            if "=" not in tok:
                if i + 1 >= len(tokens):
                    parser.error(f"{tok} needs a value")
                ours.append(tokens[i + 1])
                i += 1
        else:
            program.append(tok)
        i += 1
    if ours:
        parser.parse_args(ours, namespace=args)
    args.command = program
    return program


def resolve_program(name: str) -> str:
    """The absolute path of the program to run, or a clear error (exit 127/126
    as a shell would)."""
    if "/" in name:
        path = name
    else:
        path = shutil.which(name) or ""
        if not path:
            raise CalltraceError(f"{name}: program not found (not a path, and not on $PATH)", 127)
    if not os.path.exists(path):
        raise CalltraceError(f"{name}: no such file", 127)
    if os.path.isdir(path):
        raise CalltraceError(f"{name}: is a directory, not a program", 126)
    if not os.access(path, os.X_OK):
        raise CalltraceError(f"{name}: not executable (chmod +x?)", 126)
    return os.path.abspath(path)


def is_elf(path: str) -> bool:
    try:
        with open(path, "rb") as f:
            return f.read(4) == b"\x7fELF"
    except OSError:
        return False
