"""Per-file tables computed once per process, even when two threads ask at
the same time: `calltrace run` reads the program's tables in a thread of its
own while the program runs (record/warm.py), and the converter then waits
for that work rather than doing it again."""
from __future__ import annotations

import threading
from functools import lru_cache, wraps


def per_file(maxsize: int):
    """An lru_cache whose function runs once per argument, the other callers
    waiting for its result (errors are not kept: the next caller retries)."""
    def wrap(fn):
        cached = lru_cache(maxsize=maxsize)(fn)
        guard = threading.Lock()
        locks: dict = {}

        @wraps(fn)
        def get(path):
            with guard:
                lock = locks.setdefault(path, threading.Lock())
            with lock:
                return cached(path)
        get.cache_clear = cached.cache_clear
        return get
    return wrap
