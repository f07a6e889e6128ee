"""The ``calltrace`` command. One module per subcommand in this package; each
defines ``NAME``, ``HELP``, ``add_arguments(parser)`` and ``run(args) -> int``.
COMMANDS lists them in the order ``--help`` shows them; INTERNAL ones are
run by the runtime and left out of ``--help``.

This is the only place that prints errors and chooses exit statuses.
"""
from __future__ import annotations

import argparse
import difflib
import importlib
import io
import os
import signal
import sys
import threading

from .. import __version__
from ..errors import CalltraceError
from .options import CommandParser

COMMANDS = ("run", "attach", "debug", "replay", "report", "diff", "export", "sql", "info", "convert", "lib")
INTERNAL = ("plan", "filter")


def _subcommands(names=COMMANDS + INTERNAL):
    return [importlib.import_module(f"{__name__}.{name}") for name in names]


def build_parser(only: str | None = None) -> argparse.ArgumentParser:
    """The whole command line, or with `only`, that one command: a command
    imports just its own modules (pyarrow, capstone, pyelftools are each a
    tenth of a second), so `report` does not pay for `attach`."""
    parser = argparse.ArgumentParser(
        prog="calltrace",
        description="Trace every function call of a C/C++ program built with "
                    "gcc -finstrument-functions.",
        epilog="Run 'calltrace COMMAND --help' for a command's options.")
    parser.add_argument("--version", action="version", version=f"calltrace {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=CommandParser)
    for mod in _subcommands((only,) if only else COMMANDS + INTERNAL):
        shown = {} if mod.NAME in INTERNAL else {"help": mod.HELP}
        p = sub.add_parser(mod.NAME, description=getattr(mod, "DESCRIPTION", mod.HELP),
                           formatter_class=argparse.RawDescriptionHelpFormatter, **shown)
        mod.add_arguments(p)
        p.set_defaults(_module=mod, _parser=p)
    return parser


def error(message: str) -> None:
    print(f"calltrace: error: {message}", file=sys.stderr)


class Stdout(io.FileIO):
    """File descriptor 1 under sys.stdout: a failed write says it was
    standard output's (a bare "No space left on device" names no file).
    Said once: what is still buffered then is dropped, so the flush at exit
    neither fails again nor prints a second error."""
    failed = False

    def write(self, b) -> int:
        if self.failed:
            return len(b)
        try:
            return super().write(b)
        except OSError as e:
            self.failed = True
            if isinstance(e, BrokenPipeError):
                raise
            raise CalltraceError(f"cannot write to standard output: {e.strerror or e}") from None


class _ClosedRaw(io.RawIOBase):
    def writable(self) -> bool:
        return True

    def write(self, b) -> int:
        raise CalltraceError("cannot write to standard output: it is closed")


class _Closed(io.TextIOBase):
    """sys.stdout when fd 1 was closed (`>&-`): Python leaves None there,
    and a command's first write would be an AttributeError. Commands that
    write nothing there (run, attach, debug) never notice."""
    buffer = _ClosedRaw()     # binary output (export -f parquet -o -)

    def writable(self) -> bool:
        return True

    def write(self, s: str) -> int:
        return self.buffer.write(s)


def _stdout() -> None:
    """sys.stdout over Stdout, buffered as Python chose (none with -u)."""
    old = sys.stdout
    if old is None:
        sys.stdout = _Closed()
        return
    if not hasattr(old, "buffer"):    # not Python's own
        return
    try:
        raw = Stdout(old.fileno(), "w", closefd=False)
    except (OSError, ValueError):
        return
    buf = io.BufferedWriter(raw) if isinstance(old.buffer, io.BufferedWriter) else raw
    old.flush()
    sys.stdout = io.TextIOWrapper(buf, encoding=old.encoding, errors=old.errors,
                                  line_buffering=old.line_buffering, write_through=old.write_through)


# run, attach and debug pass these signals on to the program they trace;
# sql spends its time inside DuckDB, where a Python handler would not run
# until the query ends, so there they keep their default: they end it now.
OWN_SIGNALS = ("run", "attach", "debug", "sql")


class _Stopped(BaseException):
    """SIGTERM or SIGHUP in a command that writes files: it unwinds as
    Ctrl-C does, so no half-written output stays (files.write_atomic), and
    then the process ends by that signal, as it would have."""

    def __init__(self, sig: int):
        super().__init__(sig)
        self.sig = sig


def _stop_cleanly() -> None:
    def stop(sig, _frame):
        raise _Stopped(sig)
    for sig in (signal.SIGTERM, signal.SIGHUP):
        if signal.getsignal(sig) is signal.SIG_DFL:     # an ignored one stays ignored
            signal.signal(sig, stop)


def entry() -> None:
    """The console script (and `python -m calltrace`): main(), then out
    without the interpreter's teardown once all is written and no thread of
    ours is still working. The teardown frees, object by object, what the
    kernel frees at once: after `run`, tens of milliseconds the user waits
    for, most of them the symbol tables read while the program ran."""
    status = main()
    try:
        for stream in (sys.stdout, sys.stderr):
            if stream is not None:
                stream.flush()
    except (OSError, ValueError):
        sys.exit(status)     # let the interpreter report what it can, as before
    if any(not t.daemon and t is not threading.main_thread() for t in threading.enumerate()):
        sys.exit(status)
    os._exit(status)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    parser = build_parser(argv[0] if argv and argv[0] in COMMANDS + INTERNAL else None)
    if argv and not argv[0].startswith("-") and argv[0] not in COMMANDS + INTERNAL:
        # argparse would list the internal commands among the choices.
        parser.print_usage(sys.stderr)
        close = difflib.get_close_matches(argv[0], COMMANDS, n=1)
        error(f"unknown command {argv[0]!r} (the commands: {', '.join(COMMANDS)})"
              + (f"; did you mean {close[0]!r}?" if close else ""))
        return 2
    _stdout()
    try:
        args, unknown = parser.parse_known_args(argv)
    except SystemExit as e:
        # --help and --version print, then exit 0: not when standard output
        # could not take it (argparse drops a failed write).
        if e.code:
            raise
        try:
            sys.stdout.flush()
        except BrokenPipeError:
            return 0
        except CalltraceError as err:
            error(str(err))
            return 2
        raise
    except CalltraceError as e:     # unbuffered: the write itself failed
        error(str(e))
        return 2
    if unknown:
        # The command's own usage, not the top-level one.
        getattr(args, "_parser", parser).error("unrecognized arguments: " + " ".join(unknown))
    if args.command is None:
        parser.print_help(sys.stderr)
        return 2
    if args.command not in OWN_SIGNALS:
        _stop_cleanly()
    try:
        status = args._module.run(args)
        sys.stdout.flush()  # a full disk or a closed pipe is reported here, not at exit
        return status
    except CalltraceError as e:
        error(str(e))
        return e.exit_code
    except KeyboardInterrupt:
        return 128 + signal.SIGINT
    except _Stopped as e:
        signal.signal(e.sig, signal.SIG_DFL)
        os.kill(os.getpid(), e.sig)
        return 128 + e.sig
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
