"""The one error type of calltrace: raised by the library, printed by the CLI."""


class CalltraceError(Exception):
    """A user-facing failure: bad input, missing tool, unreadable trace.

    The CLI prints ``str(err)`` on one line and exits with ``err.exit_code``;
    it never shows a traceback for these.
    """

    exit_code = 2

    def __init__(self, message: str, exit_code: int | None = None):
        super().__init__(message)
        if exit_code is not None:
            self.exit_code = exit_code


class TraceFormatError(CalltraceError):
    """A file that is not a (complete) calltrace trace."""
