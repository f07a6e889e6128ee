"""The ``calltrace`` command. One module per subcommand in this package; each
defines ``NAME``, ``HELP``, ``add_arguments(parser)`` and ``run(args) -> int``
(and optionally ``ORDER`` for its place in ``--help``).

This is the only place that prints errors and chooses exit statuses.
"""
from __future__ import annotations

import argparse
import importlib
import os
import pkgutil
import signal
import sys

from .. import __version__
from ..errors import CalltraceError

_PRIVATE = {"options", "output"}


def _subcommands():
    mods = []
    for info in pkgutil.iter_modules(__path__):
        if info.name.startswith("_") or info.name in _PRIVATE:
            continue
        mod = importlib.import_module(f"{__name__}.{info.name}")
        if hasattr(mod, "NAME") and hasattr(mod, "run"):
            mods.append(mod)
    return sorted(mods, key=lambda m: (getattr(m, "ORDER", 50), m.NAME))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="calltrace",
        description="Trace every function call of a C/C++ program built with "
                    "gcc -finstrument-functions.",
        epilog="Run 'calltrace COMMAND --help' for a command's options.")
    parser.add_argument("--version", action="version", version=f"calltrace {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for mod in _subcommands():
        p = sub.add_parser(mod.NAME, help=mod.HELP, description=getattr(mod, "DESCRIPTION", mod.HELP),
                           formatter_class=argparse.RawDescriptionHelpFormatter)
        mod.add_arguments(p)
        p.set_defaults(_module=mod, _parser=p)
    return parser


def error(message: str) -> None:
    print(f"calltrace: error: {message}", file=sys.stderr)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help(sys.stderr)
        return 2
    try:
        return args._module.run(args)
    except CalltraceError as e:
        error(str(e))
        return e.exit_code
    except KeyboardInterrupt:
        return 128 + signal.SIGINT
    except MemoryError:
        error("out of memory")
        return 70
    except BrokenPipeError:
        # Output piped into `head` and closed: not an error worth a message.
        try:
            sys.stdout = open("/dev/null", "w")
        except OSError:
            pass
        return 0
    except Exception as e:  # a bug in calltrace: one line, details on request
        if os.environ.get("CALLTRACE_TRACEBACK"):
            raise
        error(f"internal error: {type(e).__name__}: {e} (set CALLTRACE_TRACEBACK=1 for details "
              "and please report it)")
        return 70
