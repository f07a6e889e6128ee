"""`make bench`: run every bench/bench_*.py in turn; each prints its own table.

Benchmarks measure; they never fail on a figure. Record results in BENCHMARKS.md.
"""
import os
import platform
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent


def machine() -> str:
    cpu = "unknown cpu"
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{cpu}, {os.cpu_count()} cores, {platform.platform()}"


def main() -> int:
    print(f"machine: {machine()}")
    only = sys.argv[1:]
    status = 0
    for script in sorted(HERE.glob("bench_*.py")):
        if only and not any(o in script.name for o in only):
            continue
        print(f"\n== {script.stem} ==", flush=True)
        r = subprocess.run([sys.executable, str(script)], cwd=HERE.parent)
        status |= r.returncode
    return status


if __name__ == "__main__":
    raise SystemExit(main())
