"""Options shared by the commands that launch a program (run, debug), and the
rule for what follows the program path:

  after the program path, only the options that choose what to record
  (RECORDING) are calltrace's; everything else is the program's, and
  everything after `--` is the program's too.

An option of ours other than those, found after the program path, goes to
the program with one line on stderr saying how to give it to calltrace: a
program's own `--force` or `-o` never vanishes."""
from __future__ import annotations

import argparse
import os
import shutil
import sys

from ..analysis.paths import Filter
from ..errors import CalltraceError
from ..units import argparse_duration, compile_regex

# What to record: the options that may also follow the program path (long
# names only: a short option there is always the program's).
RECORDING = ("--capture-args", "--capture-returns", "--deref", "--max-depth", "--function", "--only",
             "--exclude", "--threshold")
RULE = ("Options after PROGRAM are the program's, except calltrace's long options that choose what "
        "to record ({}); everything after -- is the program's.")


class CommandParser(argparse.ArgumentParser):
    """An ArgumentParser that remembers its option strings and whether each
    takes a value, for the rule above."""

    def __init__(self, *args, **kwargs):
        self.takes_value: dict[str, bool] = {}
        super().__init__(*args, **kwargs)

    def remember(self, action: argparse.Action) -> argparse.Action:
        for s in action.option_strings:
            self.takes_value[s] = action.nargs != 0
        return action

    def add_argument(self, *args, **kwargs) -> argparse.Action:
        return self.remember(super().add_argument(*args, **kwargs))

    def add_mutually_exclusive_group(self, **kwargs):
        group = super().add_mutually_exclusive_group(**kwargs)
        add = group.add_argument
        group.add_argument = lambda *a, **k: self.remember(add(*a, **k))
        return group


def at_least(low: int):
    """An argparse type: a whole number, `low` or more."""
    def parse(text: str) -> int:
        try:
            v = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
        if v < low:
            raise argparse.ArgumentTypeError(f"{text!r} must be {low} or more")
        return v
    return parse


positive_int = at_least(1)


def pid(text: str) -> int:
    """A process id: 1 up to pid_t's largest (a signed 32-bit int); a larger
    number would overflow os.kill and ptrace, not just find no process."""
    try:
        v = int(text)
    except ValueError:
        v = 0
    if not 0 < v < 2**31:
        raise argparse.ArgumentTypeError(f"{text!r} is not a process id")
    return v


def add_output(p: argparse.ArgumentParser, default: str = "calltrace.json") -> None:
    p.add_argument("-o", "--output", metavar="PATH", default=None,
                   help=f"where to write the trace (default: $CALLTRACE_OUTPUT or {default})")


def add_format(p: argparse.ArgumentParser) -> None:
    g = p.add_mutually_exclusive_group()
    g.add_argument("--pretty", dest="pretty", action="store_true", default=None,
                   help="indent the JSON (CALLTRACE_PRETTY_JSON=1)")
    g.add_argument("--compact", dest="pretty", action="store_false",
                   help="compact JSON, one call per line (default)")


def add_selection(p: argparse.ArgumentParser) -> None:
    """-F/--only/-N: which functions to record, the same in run and debug."""
    g = p.add_mutually_exclusive_group()
    g.add_argument("-F", "--function", metavar="REGEX",
                   help="record only the calls of functions matching REGEX and everything they call "
                        "(their subtrees); C++ names match demangled or mangled")
    g.add_argument("--only", metavar="REGEX",
                   help="record only the calls of functions matching REGEX themselves, nested as "
                        "they called each other")
    p.add_argument("-N", "--exclude", metavar="REGEX",
                   help="leave out functions matching REGEX and everything they call; "
                        "combines with -F or --only")


def add_command(p: argparse.ArgumentParser) -> None:
    rec = [o for o in RECORDING if o in getattr(p, "takes_value", {})]
    p.add_argument("command", nargs=argparse.REMAINDER, metavar="PROGRAM [ARGS...]",
                   help=RULE.format(", ".join(rec)))


def parse_command(parser: argparse.ArgumentParser, args: argparse.Namespace) -> list[str]:
    """Split `args.command` into the program's argv, parsing the recording
    options found between the program path and `--` into `args`."""
    tokens = list(args.command)
    if tokens and tokens[0] == "--":
        tokens.pop(0)
    if not tokens:
        parser.error("no program given: %s [OPTIONS] PROGRAM [ARGS...]" % parser.prog)
    takes = getattr(parser, "takes_value", {})
    ours: list[str] = []
    theirs: list[str] = []
    program = [tokens[0]]
    i = 1
    while i < len(tokens):
        tok = tokens[i]
        if tok == "--":
            program.extend(tokens[i + 1:])
            break
        name = tok.split("=", 1)[0] if tok.startswith("--") else tok
        if name in RECORDING and name in takes:
            ours.append(tok)
            if takes[name] and "=" not in tok:
                if i + 1 >= len(tokens):
                    parser.error(f"{tok} needs a value")
                ours.append(tokens[i + 1])
                i += 1
        else:
            if name in takes:
                theirs.append(name)
            program.append(tok)
        i += 1
    if ours:
        parser.parse_args(ours, namespace=args)
    if theirs:
        prog = os.path.basename(program[0])
        print(f"calltrace: note: {' '.join(theirs)} after the program path went to {prog}; "
              f"to give {'it' if len(theirs) == 1 else 'them'} to calltrace, put "
              f"{'it' if len(theirs) == 1 else 'them'} before {program[0]}", file=sys.stderr)
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


def output_path(output: str | None) -> str:
    """The trace's path (-o, $CALLTRACE_OUTPUT or calltrace.json), checked
    before the program runs: its folder exists and it is not a folder."""
    output = output or os.environ.get("CALLTRACE_OUTPUT") or "calltrace.json"
    if output == "/dev/null":
        return output
    if os.path.isdir(output):
        raise CalltraceError(f"cannot write {output}: it is a folder; give a file name "
                             f"(e.g. {os.path.join(output, 'calltrace.json')})")
    folder = os.path.dirname(os.path.abspath(output))
    if not os.path.isdir(folder):
        raise CalltraceError(f"cannot write {output}: folder {folder} does not exist")
    return output



def add_filters(p) -> None:
    """-F/-N/-D/-t/--tid, shared by replay and export."""
    p.add_argument("-F", "--function", metavar="REGEX",
                   help="show only the subtrees of calls whose name matches")
    p.add_argument("-N", "--exclude", metavar="REGEX",
                   help="hide calls whose name matches, with everything they call")
    p.add_argument("-D", "--depth", metavar="N", type=int,
                   help="show N levels (counted from the -F match when given)")
    p.add_argument("-t", "--threshold", metavar="TIME", type=argparse_duration, default=0,
                   help="hide calls shorter than TIME (e.g. 10us, 2ms) and what they call")
    p.add_argument("--tid", metavar="N", type=int, action="append",
                   help="show only thread N (repeatable)")


def make_filter(args) -> Filter:
    if args.depth is not None and args.depth < 1:
        raise CalltraceError("-D/--depth must be at least 1")
    return Filter(*(compile_regex(r, o) if r is not None else None
                    for r, o in ((args.function, "-F"), (args.exclude, "-N"))), args.depth, args.threshold)
