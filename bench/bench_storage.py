"""Disk use per recorded call (issue 14): bytes the raw stream takes on disk
(allocated blocks, not the file's apparent size) divided by the calls in it,
for one long thread, many short threads, and many long threads.

Runs the gcc-built fixtures (build/fixtures) under the runtime the way
`calltrace run` does, keeping the raw stream, and deletes it afterwards."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
FIX = ROOT / "build" / "fixtures"
CASES = [
    ("(a) 1 thread x 10M calls", ["many_threads", "1", "10000000"], 10_000_000 + 3),
    ("(b) 100,000 threads x 1 call", ["churn", "100000", "1", "8"], 100_000 + 1),
    ("(c) 64 threads x 1M calls", ["many_threads", "64", "1000000"], 64_000_000 + 3),
]


def lib() -> str:
    return subprocess.run([sys.executable, "-m", "calltrace", "lib"], capture_output=True, text=True,
                          check=True, cwd="/").stdout.strip()


def main() -> None:
    runtime = lib()
    print(f"{'case':32} {'calls':>12} {'on disk':>12} {'bytes/call':>11} {'seconds':>8}")
    per_call = {}
    for name, argv, calls in CASES:
        folder = tempfile.mkdtemp(prefix="calltrace-bench-storage-")
        try:
            env = {k: v for k, v in os.environ.items() if not k.startswith("CALLTRACE_")}
            env.update(LD_PRELOAD=runtime, CALLTRACE_RAW_DIR=folder)
            t0 = time.monotonic()
            subprocess.run([str(FIX / argv[0]), *argv[1:]], env=env, check=True, stdout=subprocess.DEVNULL)
            seconds = time.monotonic() - t0
            used = sum(os.stat(p).st_blocks * 512 for p in Path(folder).glob("*.raw"))
        finally:
            shutil.rmtree(folder, ignore_errors=True)
        per_call[name] = used / calls
        print(f"{name:32} {calls:>12,} {used:>12,} {used / calls:>11.1f} {seconds:>8.1f}", flush=True)
    a, b = per_call[CASES[0][0]], per_call[CASES[1][0]]
    print(f"(b) / (a) per call: {b / a:.1f}x (issue 14 asks for at most 4x)")


if __name__ == "__main__":
    main()
