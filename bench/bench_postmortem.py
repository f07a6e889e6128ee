"""Post-mortem commands on a large synthetic trace (default 10M calls).

The trace is written directly in the canonical layout (the one
runtime/convert.c writes): THREADS threads, each a root call followed by
iterations of step -> (leaf_a, leaf_b). Then each command runs as a user
would run it, and the table shows wall time and the command's peak RSS.

    python bench/bench_postmortem.py [--calls N] [--keep DIR] [--only report,replay]
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time

THREADS = 4
PERIOD = 100          # ns per iteration
STEP, A, B = 90, 20, 30


def write_trace(path: str, calls: int) -> None:
    per_thread = calls // THREADS
    iters = (per_thread - 1) // 3
    total_calls = THREADS * (1 + 3 * iters)
    root_dur = 20 + iters * PERIOD
    roots = ["main"] + ["worker"] * (THREADS - 1)
    stats = {
        "step": [THREADS * iters, THREADS * iters * STEP, THREADS * iters * (STEP - A - B), STEP, STEP],
        "leaf_b": [THREADS * iters, THREADS * iters * B, THREADS * iters * B, B, B],
        "leaf_a": [THREADS * iters, THREADS * iters * A, THREADS * iters * A, A, A],
        "main": [1, root_dur, root_dur - iters * STEP, root_dur, root_dur],
        "worker": [THREADS - 1, (THREADS - 1) * root_dur, (THREADS - 1) * (root_dur - iters * STEP),
                   root_dur, root_dur],
    }
    md = {"total_calls": total_calls, "program": "/bench/synthetic", "argv": ["synthetic"], "pid": 1,
          "parent_pid": None, "exit_status": 0, "termination": "exit", "signal": None,
          "backend": "runtime", "start_time": "2026-01-01T00:00:00+00:00",
          "duration_ns": root_dur + THREADS, "clock": "monotonic",
          "options": {"max_depth": None, "capture_args": False, "pretty": False},
          "thread_count": THREADS, "incomplete_calls": 0, "depth_limited_calls": 0,
          "dropped_events": 0, "calltrace_version": "bench"}
    with open(path, "w") as f:
        f.write('{\n"format":"calltrace",\n"version":1,\n"metadata":' + json.dumps(md, separators=(",", ":"))
                + ',\n"functions":[')
        rows = sorted(stats.items(), key=lambda kv: -kv[1][2])
        f.write(",".join(f'\n{{"function":"{n}","module":null,"file":null,"line":null,"calls":{c},'
                         f'"total_ns":{t},"self_ns":{s},"min_ns":{lo},"max_ns":{hi}}}'
                         for n, (c, t, s, lo, hi) in rows))
        f.write('\n],\n"threads":[')
        for k in range(THREADS):
            t0 = k
            f.write(("," if k else "") + f'\n{{"tid":{1000 + k},"name":null,"main":{str(k == 0).lower()},'
                    f'"calls":[\n{{"function":"{roots[k]}","depth":0,"start_ns":{t0},"duration_ns":{root_dur}}}')
            block = []
            for i in range(iters):
                s = t0 + 10 + i * PERIOD
                block.append(f',\n{{"function":"step","depth":1,"start_ns":{s},"duration_ns":{STEP}}}'
                             f',\n{{"function":"leaf_a","depth":2,"start_ns":{s + 5},"duration_ns":{A}}}'
                             f',\n{{"function":"leaf_b","depth":2,"start_ns":{s + 40},"duration_ns":{B}}}')
                if len(block) >= 20000:
                    f.write("".join(block))
                    block.clear()
            f.write("".join(block) + "]}")
        f.write("\n]\n}\n")


def run(cmd: list[str], pipe_to: list[str] | None = None) -> tuple[float, int, int]:
    """Wall seconds, peak RSS in MB and exit status of ``cmd``."""
    start = time.perf_counter()
    # Run outside the source tree: the installed calltrace is measured.
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE if pipe_to else subprocess.DEVNULL,
                         stderr=subprocess.PIPE, cwd=tempfile.gettempdir())
    tail = subprocess.Popen(pipe_to, stdin=p.stdout, stdout=subprocess.DEVNULL) if pipe_to else None
    if p.stdout:
        p.stdout.close()
    _, status, usage = os.wait4(p.pid, 0)
    p.returncode = os.waitstatus_to_exitcode(status)
    if tail:
        tail.wait()
    err = p.stderr.read().decode(errors="replace")
    p.stderr.close()
    wall = time.perf_counter() - start
    if p.returncode:
        print(f"  {' '.join(cmd[3:])}: exit {p.returncode}: {err.strip()[-300:]}", file=sys.stderr)
    return wall, usage.ru_maxrss // 1024, p.returncode


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--calls", type=int, default=10_000_000)
    ap.add_argument("--keep", metavar="DIR", help="write the trace and outputs here and keep them")
    ap.add_argument("--only", help="comma-separated command names to run")
    args = ap.parse_args()
    folder = args.keep or tempfile.mkdtemp(prefix="calltrace-bench-")
    os.makedirs(folder, exist_ok=True)
    trace = os.path.join(folder, "big.json")
    t = time.perf_counter()
    write_trace(trace, args.calls)
    size = os.path.getsize(trace)
    with open(trace) as f:
        f.readline(), f.readline(), f.readline()
        total = json.loads(f.readline()[len('"metadata":'):-2])["total_calls"]
    print(f"trace: {total:,} calls in {THREADS} threads, {size / 1e6:.0f} MB "
          f"(written in {time.perf_counter() - t:.1f} s)")
    ct = [sys.executable, "-m", "calltrace"]
    out = lambda suffix: os.path.join(folder, "out" + suffix)  # noqa: E731
    cases = [
        ("report", ct + ["report", trace], None),
        ("info", ct + ["info", trace], None),
        ("report --threads", ct + ["report", "--threads", trace], None),
        ("report --slowest 10", ct + ["report", "--slowest", "10", trace], None),
        ("replay | tail", ct + ["replay", trace], ["tail", "-n", "1"]),
        ("replay -t 1us | tail", ct + ["replay", "-t", "1us", trace], ["tail", "-n", "1"]),
        ("export folded", ct + ["export", trace, "-f", "folded", "-o", out(".folded")], None),
        ("export svg", ct + ["export", trace, "-f", "svg", "-o", out(".svg")], None),
        ("export chrome", ct + ["export", trace, "-f", "chrome", "--max-events", str(total + 1), "-o", out(".chrome.json")], None),
        ("export speedscope", ct + ["export", trace, "-f", "speedscope", "--max-events", str(total + 1), "-o", out(".speedscope.json")], None),
        ("export html", ct + ["export", trace, "-f", "html", "-o", out(".html")], None),
    ]
    only = set(args.only.split(",")) if args.only else None
    print(f"{'command':<24}{'seconds':>9}{'s/1M calls':>12}{'peak RSS MB':>13}")
    status = 0
    for name, cmd, pipe in cases:
        if only and name.split()[0] not in only and name not in only:
            continue
        wall, rss, rc = run(cmd, pipe)
        status |= rc != 0
        print(f"{name:<24}{wall:>9.2f}{wall / (total / 1e6):>12.3f}{rss:>13}", flush=True)
    print("(uftrace report, for reference: about 0.19 s per 1M calls on this class of machine)")
    if not args.keep:
        shutil.rmtree(folder, ignore_errors=True)
    return status


if __name__ == "__main__":
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    raise SystemExit(main())
