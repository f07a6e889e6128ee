"""Recording cost per call, side by side in one run (issue: foundation).

Columns are medians over interleaved repetitions; compare ratios within one
run, the machine is noisy. ns/call is measured inside the program around a
loop of calls to an empty function, so start-up and conversion are excluded;
"end to end" times `calltrace run` including writing the JSON."""
from __future__ import annotations

import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BUILD = ROOT / "build" / "bench"
CALLS = 10_000_000
REPEAT = 5


def build() -> dict[str, str]:
    BUILD.mkdir(parents=True, exist_ok=True)
    src = ROOT / "bench" / "calls.c"
    out = {"plain": ["-O2"], "instr": ["-O2", "-finstrument-functions", "-rdynamic"]}
    paths = {}
    for name, flags in out.items():
        path = BUILD / f"calls-{name}"
        subprocess.run(["gcc", "-g", *flags, str(src), "-o", str(path)], check=True)
        paths[name] = str(path)
    return paths


def lib() -> str:
    return subprocess.run([sys.executable, "-m", "calltrace", "lib"], capture_output=True,
                          text=True, check=True, cwd="/").stdout.strip()


def measure(argv, env=None, cwd=None) -> tuple[float, int]:
    """(ns per call as the program reports it, peak RSS in KiB)."""
    full = {k: v for k, v in os.environ.items() if not k.startswith("CALLTRACE_")}
    full.pop("LD_PRELOAD", None)
    full.update(env or {})
    proc = subprocess.run(argv, env=full, cwd=cwd, stdout=subprocess.DEVNULL,
                          stderr=subprocess.PIPE)
    err = proc.stderr.decode()
    if proc.returncode != 0:
        raise SystemExit(f"{argv[0]} failed ({proc.returncode}): {err}")
    ns, kb = err.strip().splitlines()[-1].split()
    return float(ns), int(kb)


def main() -> None:
    bins = build()
    runtime = lib()
    raw_dir = tempfile.mkdtemp(prefix="calltrace-bench-")
    uftrace = shutil.which("uftrace")
    configs = {
        "no hooks (built without -finstrument-functions)": ([bins["plain"]], {}),
        "empty hooks (glibc's, not preloaded)": ([bins["instr"]], {}),
        "calltrace loaded, recording off (CALLTRACE_START=off)": (
            [bins["instr"]], {"LD_PRELOAD": runtime, "CALLTRACE_RAW_DIR": raw_dir,
                              "CALLTRACE_START": "off"}),
        "calltrace recording": ([bins["instr"]], {"LD_PRELOAD": runtime,
                                                  "CALLTRACE_RAW_DIR": raw_dir}),
    }
    plan = os.path.join(raw_dir, "calls.plan")
    subprocess.run([sys.executable, "-m", "calltrace", "plan", bins["instr"], "-o", plan], check=True, cwd="/")
    capture = {"LD_PRELOAD": runtime, "CALLTRACE_RAW_DIR": raw_dir, "CALLTRACE_CAPTURE_ARGS": "1",
               "CALLTRACE_PLAN": plan}
    configs["calltrace --capture-args, f(int, int, int)"] = ([bins["instr"]], capture)
    configs["calltrace --capture-args, f(const char *)"] = ([bins["instr"]], capture, ["str"])
    if uftrace:
        configs["uftrace record"] = ([uftrace, "record", "--no-libcall", "-d",
                                      os.path.join(raw_dir, "uftrace.data"), bins["instr"]], {})
    results = {k: [] for k in configs}
    rss = {k: [] for k in configs}
    for _ in range(REPEAT):
        for name, (argv, env, *tail) in configs.items():
            ns, kb = measure([*argv, str(CALLS), *(tail[0] if tail else [])], env)
            results[name].append(ns)
            rss[name].append(kb)
            for f in Path(raw_dir).glob("*.raw"):
                f.unlink()
            shutil.rmtree(os.path.join(raw_dir, "uftrace.data"), ignore_errors=True)
    base = statistics.median(results["empty hooks (glibc's, not preloaded)"])
    plain = statistics.median(results["calltrace recording"])
    print(f"{CALLS:,} calls of an empty function, median of {REPEAT} interleaved runs")
    print(f"{'configuration':56} {'ns/call':>8} {'over empty':>11} {'over rec.':>10} {'peak RSS':>10}")
    for name in configs:
        med = statistics.median(results[name])
        print(f"{name:56} {med:8.2f} {med - base:+11.2f} {med - plain:+10.2f} "
              f"{statistics.median(rss[name]) / 1024:8.1f} MB")
    if not uftrace:
        print("(uftrace not installed: `apt-get install uftrace` to compare)")

    # Memory must stay flat with the number of calls: 1M vs 100M.
    print("\nadded peak RSS over empty hooks, by number of calls:")
    for n in (1_000_000, 100_000_000):
        _, empty_kb = measure([bins["instr"], str(n)])
        _, ct_kb = measure([bins["instr"], str(n)], {"LD_PRELOAD": runtime, "CALLTRACE_RAW_DIR": raw_dir})
        raw = sum(f.stat().st_size for f in Path(raw_dir).glob("*.raw"))
        for f in Path(raw_dir).glob("*.raw"):
            f.unlink()
        print(f"  {n:>12,} calls: +{(ct_kb - empty_kb) / 1024:.2f} MB RSS, raw stream "
              f"{raw / n:.2f} bytes/call")

    # End to end: calltrace run, JSON included.
    n = 2_000_000
    out = os.path.join(raw_dir, "e2e.json")
    walls = []
    for _ in range(3):
        t0 = time.perf_counter()
        subprocess.run([sys.executable, "-m", "calltrace", "run", "-q", "-o", out, bins["instr"], str(n)],
                       check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd="/")
        walls.append(time.perf_counter() - t0)
    wall = statistics.median(walls)
    size = os.path.getsize(out)
    print(f"\nend to end `calltrace run` with {n:,} calls: {wall:.2f} s "
          f"({n / wall / 1e6:.2f} M calls/s including start-up), JSON {size / n:.1f} bytes/call")
    shutil.rmtree(raw_dir, ignore_errors=True)


if __name__ == "__main__":
    main()
