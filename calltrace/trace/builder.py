"""Build flat call lists and the per-function table from enter/exit events.

Used by producers that see events one at a time (the GDB backend) and by
tests. The runtime's converter (runtime/convert.c) implements the same rules
in C; both are checked against each other by the test suite.
"""
from __future__ import annotations

from .model import Call, FunctionStats, Thread


class _Frame:
    __slots__ = ("call", "child_ns", "outermost")

    def __init__(self, call: Call, outermost: bool):
        self.call = call
        self.child_ns = 0
        self.outermost = outermost


class TraceBuilder:
    """Feed ``enter``/``exit`` per thread in time order, then ``finish``."""

    def __init__(self) -> None:
        self.threads: dict[int, Thread] = {}
        self._stacks: dict[int, list[_Frame]] = {}
        self._active: dict[int, dict[str, int]] = {}
        self.stats: dict[str, FunctionStats] = {}
        self.incomplete = 0
        self.unmatched_exits = 0
        self.last_ns = 0

    def thread(self, tid: int, name: str | None = None, main: bool = False) -> Thread:
        t = self.threads.get(tid)
        if t is None:
            t = self.threads[tid] = Thread(tid, [], name, main)
            self._stacks[tid] = []
            self._active[tid] = {}
        else:
            if name is not None:
                t.name = name
            t.main = t.main or main
        return t

    def enter(self, tid: int, function: str, ts_ns: int, **extra) -> Call:
        t = self.thread(tid)
        stack = self._stacks[tid]
        call = Call(function, len(stack), ts_ns, 0, **extra)
        t.calls.append(call)
        active = self._active[tid]
        n = active.get(function, 0)
        active[function] = n + 1
        stack.append(_Frame(call, n == 0))
        self.last_ns = max(self.last_ns, ts_ns)
        return call

    def exit(self, tid: int, ts_ns: int, function: str | None = None, ret: dict | None = None,
             unwound: bool = False) -> Call | None:
        """Close the innermost open call (or, given ``function``, the innermost
        open call of that function, closing skipped frames as unwound)."""
        stack = self._stacks.get(tid)
        if not stack:
            self.unmatched_exits += 1
            return None
        if function is not None and stack[-1].call.function != function:
            if not any(f.call.function == function for f in stack):
                self.unmatched_exits += 1
                return None
            while stack[-1].call.function != function:
                self._close(tid, ts_ns, unwound=True)
        call = self._close(tid, ts_ns, unwound=unwound)
        if ret is not None:
            call.ret = ret
        return call

    def _close(self, tid: int, ts_ns: int, unwound: bool = False, incomplete: bool = False) -> Call:
        stack = self._stacks[tid]
        frame = stack.pop()
        call = frame.call
        call.duration_ns = max(0, ts_ns - call.start_ns)
        call.unwound = unwound
        call.incomplete = incomplete
        if stack:
            stack[-1].child_ns += call.duration_ns
        active = self._active[tid]
        active[call.function] -= 1
        st = self.stats.get(call.function)
        if st is None:
            st = self.stats[call.function] = FunctionStats(call.function, min_ns=call.duration_ns)
        st.calls += 1
        if frame.outermost:
            st.total_ns += call.duration_ns
        st.self_ns += max(0, call.duration_ns - frame.child_ns)
        st.min_ns = min(st.min_ns, call.duration_ns)
        st.max_ns = max(st.max_ns, call.duration_ns)
        self.last_ns = max(self.last_ns, ts_ns)
        return call

    def finish(self, end_ns: int | None = None) -> None:
        """Close every call still open as ``incomplete`` at ``end_ns``."""
        end = self.last_ns if end_ns is None else end_ns
        for tid, stack in self._stacks.items():
            while stack:
                self._close(tid, end, incomplete=True)
                self.incomplete += 1

    @property
    def total_calls(self) -> int:
        return sum(len(t.calls) for t in self.threads.values())

    def functions(self) -> list[FunctionStats]:
        return sorted(self.stats.values(), key=lambda s: (-s.self_ns, s.function))
