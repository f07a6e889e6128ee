"""calltrace attach: time from the command's start to recording, time to
detach, and the cost per call while attached, next to `calltrace run` and
to no tracing at all (glibc's empty hooks).

The workload (bench/attach_loop.c) times rounds of 200,000 calls itself,
about 10 M calls a second: each 2 s attach records some 20 M calls, which
calltrace converts before the next attach."""
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CT = [sys.executable, "-m", "calltrace"]
ROUND = "200000"        # calls per timed round


def build(tmp: str) -> str:
    out = os.path.join(tmp, "attach_loop")
    subprocess.check_call(["gcc", "-O2", "-finstrument-functions", "-g", str(ROOT / "bench" / "attach_loop.c"),
                           "-o", out])
    return out


class Loop:
    def __init__(self, argv, cwd):
        # cwd outside the source tree: `python -m calltrace` must find the
        # installed package (with its built runtime), not ./calltrace
        self.proc = subprocess.Popen(argv, stdout=subprocess.PIPE, text=True, start_new_session=True, cwd=cwd)
        self.rounds: list[tuple[float, float]] = []       # (time printed, ns per call)
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self):
        for line in self.proc.stdout:
            try:
                self.rounds.append((time.monotonic(), float(line)))
            except ValueError:
                pass

    def between(self, t0, t1):
        return [v for t, v in self.rounds if t0 <= t <= t1]

    def stop(self):
        self.proc.kill()
        self.proc.wait()


def main() -> None:
    tmp = tempfile.mkdtemp(prefix="bench-attach-")
    prog = build(tmp)
    out = os.path.join(tmp, "t.json")
    loop = Loop([prog, "3600", ROUND], tmp)      # killed when done
    time.sleep(2)
    base = loop.between(0, time.monotonic())
    attach_ms, detach_ms, attached = [], [], []
    try:
        for _ in range(5):
            t0 = time.monotonic()
            subprocess.run([*CT, "attach", str(loop.proc.pid), "--duration", "2s", "-q", "-o", out], check=True,
                           cwd=tmp, timeout=120)
            meta = json.load(open(out))["metadata"]["attach"]
            attach_ms.append(meta["attach_ms"])
            detach_ms.append(meta["detach_ms"])
            start = t0 + meta["attach_ms"] / 1000 + 0.3
            attached += loop.between(start, start + 1.4)
            time.sleep(0.5)
    finally:
        loop.stop()
    run = Loop([*CT, "run", "-q", "-o", out, prog, "4", ROUND], tmp)
    run.proc.wait(timeout=120)
    ran = [v for _, v in run.rounds][2:]
    med = statistics.median
    print(f"{'attach (command start to recording)':40s} {med(attach_ms):8.0f} ms  (max {max(attach_ms):.0f}, 5 runs)")
    print(f"{'detach (stop to process let go)':40s} {med(detach_ms):8.0f} ms  (max {max(detach_ms):.0f})")
    print(f"{'per call, not traced':40s} {med(base):8.2f} ns")
    print(f"{'per call, attached and recording':40s} {med(attached):8.2f} ns  ({len(attached)} rounds)")
    print(f"{'per call, calltrace run':40s} {med(ran):8.2f} ns  ({len(ran)} rounds)")
    subprocess.run(["rm", "-rf", tmp])


if __name__ == "__main__":
    main()
