"""calltrace and uftrace side by side on real code no one here wrote: the
single-file zstd library from the zstandard sdist (fetched with pip into
build/bench, never committed), driven by bench/zstd_main.c and built with
-finstrument-functions. Each size runs both tools live on the same program;
the table gives wall time, peak RSS of the command itself, and output size.

    python bench/bench_columnar.py [--calls 10M,100M] [--repeat N] [--keep]

Each command runs N times (default 3), a calltrace command and its uftrace
peer taking turns (record, replay, chrome), and the table gives the median
wall time, the largest peak RSS, and the median's ratio to the uftrace
command that does the same job ("vs uftrace": calltrace's time over
uftrace's).
`report` and `diff` read the function table the converter wrote (marked
"table"), `report --threads` and `--slowest 10` the footer index the
converter wrote beside it ("index"); `report --slowest 101` is past the
index and computed from the calls ("scan"), as is every other calltrace
figure and all of uftrace's."""
from __future__ import annotations

import argparse
import glob
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tarfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
WORK = ROOT / "build" / "bench"
CT = [sys.executable, "-m", "calltrace"]


def sources() -> Path:
    """zstd/zstd.c from the zstandard sdist, downloaded once into build/bench."""
    found = glob.glob(str(WORK / "zstandard-*" / "zstd" / "zstd.c"))
    if found:
        return Path(found[0]).parent
    dl = WORK / "dl"
    dl.mkdir(parents=True, exist_ok=True)
    subprocess.run([sys.executable, "-m", "pip", "download", "-q", "--no-binary", ":all:", "--no-deps",
                    "zstandard", "-d", str(dl)], check=True)
    (sdist,) = glob.glob(str(dl / "zstandard-*.tar.gz"))
    with tarfile.open(sdist) as t:
        members = [m for m in t.getmembers() if "/zstd/" in m.name and m.isfile()]
        t.extractall(WORK, members=members, filter="data")
    return Path(glob.glob(str(WORK / "zstandard-*" / "zstd" / "zstd.c"))[0]).parent


def program() -> str:
    zstd = sources()
    exe = WORK / "zstd_main"
    main = ROOT / "bench" / "zstd_main.c"
    if not exe.exists() or exe.stat().st_mtime < main.stat().st_mtime:
        print("building zstd_main (zstd.c with -finstrument-functions)...", flush=True)
        subprocess.run(["gcc", "-O2", "-g", "-finstrument-functions", "-rdynamic", "-pthread", f"-I{zstd}",
                        str(main), str(zstd / "zstd.c"), "-o", str(exe)], check=True)
    return str(exe)


def measure(cmd: list[str], cwd: Path, stdout=subprocess.DEVNULL) -> tuple[float, float]:
    """Wall seconds and peak RSS (MB) of one command and its children. The
    RSS comes from /usr/bin/time: a child forked straight from this Python
    process would report this process's RSS as its own high-water mark."""
    report = cwd / ".rss"
    t0 = time.perf_counter()
    proc = subprocess.run(["/usr/bin/time", "-f", "%M", "-o", str(report), *cmd], cwd=cwd,
                          stdout=stdout, stderr=subprocess.PIPE)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed ({proc.returncode}): "
                         f"{proc.stderr.decode(errors='replace')[-500:]}")
    rss = int(report.read_text().split()[-1]) / 1024
    report.unlink()
    return wall, rss


def footer(path: Path) -> dict:
    import pyarrow.parquet as pq
    return json.loads(pq.ParquetFile(path).metadata.metadata[b"calltrace"])


def first_line(cmd: list[str], cwd: Path) -> float:
    """Seconds until a command has printed its first call line."""
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    proc.stdout.readline()          # the thread's heading
    proc.stdout.readline()
    took = time.perf_counter() - t0
    proc.kill()
    proc.wait()
    proc.stdout.close()
    return took


def calibrate(exe: str, tmp: Path) -> float:
    """Calls per KB of input, from a small traced run."""
    measure([*CT, "run", "-q", "-o", "probe.parquet", exe, "256"], tmp)
    return footer(tmp / "probe.parquet")["metadata"]["total_calls"] / 256


def size_of(path: Path) -> int:
    if path.is_dir():
        return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())
    return path.stat().st_size if path.exists() else 0


def one(exe: str, kb: int, tmp: Path, uftrace: str | None, repeat: int) -> list[tuple]:
    rows = []

    def side_by_side(*specs):
        """Run each (name, cmd, out, note, fresh) `repeat` times, taking turns,
        so that a pair compared in the ratio column meets the same machine.
        `fresh`: the command writes `out` from scratch (a recording), removed
        before each run."""
        walls = [[] for _ in specs]
        rsss = [[] for _ in specs]
        for _ in range(repeat):
            for i, (name, cmd, out, note, fresh) in enumerate(specs):
                if fresh and out:
                    shutil.rmtree(tmp / out, ignore_errors=True)
                    (tmp / out).unlink(missing_ok=True)
                wall, rss = measure(cmd, tmp)
                walls[i].append(wall)
                rsss[i].append(rss)
        for (name, cmd, out, note, fresh), w, r in zip(specs, walls, rsss):
            rows.append((name, statistics.median(w), max(r), size_of(tmp / out) if out else 0, note))
            print(f"  {name:<34} {statistics.median(w):8.2f} s {max(r):8.1f} MB   runs: "
                  f"{' '.join(f'{x:.2f}' for x in w)}", flush=True)

    def row(name, cmd, out=None, note=""):
        side_by_side((name, cmd, out, note, False))

    def peer(name, cmd, out=None, fresh=False):
        """One command of a pair run side by side (the ratio column's two)."""
        return (name, cmd, out, "", fresh)

    row("program alone", [exe, str(kb)])
    run = peer("calltrace run -o t.parquet", [*CT, "run", "-q", "-o", "t.parquet", exe, str(kb)], "t.parquet",
               fresh=True)
    record = peer("uftrace record", [uftrace, "record", "-d", "udata", exe, str(kb)], "udata", fresh=True)
    side_by_side(run, record) if uftrace else side_by_side(run)
    calls = footer(tmp / "t.parquet")["metadata"]["total_calls"]
    row("calltrace info", [*CT, "info", "t.parquet"], note="footer")
    row("calltrace report", [*CT, "report", "t.parquet"], note="table")
    row("calltrace report --threads", [*CT, "report", "--threads", "t.parquet"], note="index")
    row("calltrace report --slowest 10", [*CT, "report", "--slowest", "10", "t.parquet"], note="index")
    row("calltrace report --slowest 101", [*CT, "report", "--slowest", "101", "t.parquet"], note="scan")
    row("calltrace diff", [*CT, "diff", "t.parquet", "t.parquet"], note="table")
    if uftrace:
        row("uftrace report", [uftrace, "report", "-d", "udata"])
    first = statistics.median(first_line([*CT, "replay", "t.parquet"], tmp) for _ in range(repeat))
    rows.append(("calltrace replay: first line", first, 0, 0, "latency"))
    print(f"  {'calltrace replay: first line':<34} {first:8.2f} s", flush=True)
    replay = peer("calltrace replay", [*CT, "replay", "t.parquet"])
    side_by_side(replay, peer("uftrace replay", [uftrace, "replay", "-d", "udata"])) if uftrace \
        else side_by_side(replay)
    chrome = peer("calltrace export -f chrome", [*CT, "export", "t.parquet", "-f", "chrome", "--max-events",
                                                 str(calls + 1), "-o", "-"])
    side_by_side(chrome, peer("uftrace dump --chrome", [uftrace, "dump", "--chrome", "-d", "udata"])) \
        if uftrace else side_by_side(chrome)
    row("calltrace export -f perfetto", [*CT, "export", "t.parquet", "-f", "perfetto", "--max-events",
                                         str(calls + 1), "-o", "t.pftrace"], "t.pftrace")
    # calltrace only: uftrace has no equivalent of these from a recorded run
    for fmt in ("folded", "svg", "speedscope", "html"):
        row(f"calltrace export -f {fmt}", [*CT, "export", "t.parquet", "-f", fmt, "--max-events",
                                           str(calls + 1), "-o", f"t.{fmt}"], f"t.{fmt}")
    return calls, rows


# The uftrace command doing the same job as a calltrace one.
UFTRACE_PEER = {
    "calltrace run -o t.parquet": "uftrace record",
    **{f"calltrace {c}": "uftrace report" for c in ("report", "report --threads", "report --slowest 10",
                                                    "report --slowest 101", "diff")},
    "calltrace replay": "uftrace replay",
    "calltrace export -f chrome": "uftrace dump --chrome",
    "calltrace export -f perfetto": "uftrace dump --chrome",
}


def parse_count(text: str) -> int:
    text = text.strip().upper()
    scale = {"K": 10**3, "M": 10**6, "G": 10**9}.get(text[-1:], 1)
    return int(float(text.rstrip("KMG")) * scale)


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--calls", default="10M", help="target sizes, comma-separated (e.g. 10M,100M)")
    ap.add_argument("--repeat", type=int, default=3, help="runs of each command (median wall time)")
    ap.add_argument("--keep", action="store_true", help="keep the traces in build/bench/run-*")
    args = ap.parse_args()
    exe = program()
    uftrace = shutil.which("uftrace")
    if not uftrace:
        print("uftrace not found (apt-get install uftrace): calltrace figures only")
    tmp = WORK / "run-probe"
    tmp.mkdir(parents=True, exist_ok=True)
    per_kb = calibrate(exe, tmp)
    shutil.rmtree(tmp)
    print(f"zstd_main: {per_kb:,.0f} calls per KB of input compressed")
    for target in args.calls.split(","):
        want = parse_count(target)
        kb = max(64, round(want / per_kb / 64) * 64)
        tmp = WORK / f"run-{target}"
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        print(f"\n{target} calls target: zstd_main {kb} (KB)", flush=True)
        try:
            calls, rows = one(exe, kb, tmp, uftrace, args.repeat)
        finally:
            if not args.keep:
                shutil.rmtree(tmp, ignore_errors=True)
        print(f"\n{calls:,} calls")
        print(f"median of {args.repeat} runs each; {platform.node()}, {os.cpu_count()} CPUs, "
              f"load {' '.join(f'{x:.2f}' for x in os.getloadavg())} at the end")
        walls = {name: wall for name, wall, *_ in rows}
        print(f"{'command':<34} {'wall s':>8} {'peak RSS':>10} {'output':>12} {'bytes/call':>10} "
              f"{'vs uftrace':>10}  note")
        for name, wall, rss, size, note in rows:
            per = f"{size / calls:10.2f}" if size else " " * 10
            out = f"{size / 1e6:9.1f} MB" if size else " " * 12
            peer = walls.get(UFTRACE_PEER.get(name, ""))
            vs = f"{wall / peer:9.2f}x" if peer else " " * 10
            print(f"{name:<34} {wall:8.2f} {rss:7.1f} MB {out} {per} {vs}  {note}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
