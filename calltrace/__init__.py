"""calltrace: a function-call tracer for C and C++ programs built with
``gcc -finstrument-functions``.

Library use::

    import calltrace
    trace = calltrace.load("calltrace.json")
    for thread in trace.threads:
        for call in thread.calls:
            print(thread.tid, "  " * call.depth + call.function, call.duration_ns)
"""
from .errors import CalltraceError, TraceFormatError
from .trace.model import Call, FunctionStats, Row, Thread, Trace
from .trace.reader import load

__version__ = "0.1.0"
__all__ = ["load", "Trace", "Thread", "Call", "Row", "FunctionStats", "CalltraceError",
           "TraceFormatError", "__version__"]
