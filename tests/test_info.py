"""calltrace info: the metadata in readable form."""
from __future__ import annotations

import calltrace
from conftest import fixture, run_cli
from postmortem_util import write_demo


def test_info_demo(tmp_path):
    path = write_demo(tmp_path / "demo.json")
    p = run_cli("info", path)
    assert (p.returncode, p.stderr) == (0, b"")
    assert p.stdout.decode() == f"""\
trace:               {path}
program:             /opt/demo/prog
command:             prog -x
pid:                 4242
host:                testhost
started:             2026-01-02T03:04:05+00:00
duration:            10.000 us
end:                 exited with status 0
recorded by:         runtime backend, calltrace 0.1.0
clock:               monotonic
options:             max_depth=none, capture_args=False, pretty=False
calls:               12
functions:           6
incomplete calls:    0
depth-limited calls: 0
dropped events:      0
hottest:             report (5.500 us self, 1 call)
threads (2):
       100      10 calls  [main]
       101       2 calls  worker-1
"""


def test_info_signal_and_notes(tmp_path):
    from postmortem_util import write, leaf
    path = write(tmp_path / "s.json", [(5, None, [leaf("f", 0, 10)])], termination="signal", signal=11,
                 exit_status=139, notes=["no debug info: args absent"], parent_pid=77)
    out = run_cli("info", path, check=True).stdout.decode().splitlines()
    assert "pid:                 4242 (child of 77)" in out
    assert "end:                 killed by signal 11 (status 139)" in out
    assert "note:                no debug info: args absent" in out


def test_info_real_trace(tmp_path):
    out = tmp_path / "w.json"
    run_cli("run", "-q", "-o", out, fixture("workers"), check=True)
    lines = run_cli("info", out, check=True).stdout.decode().splitlines()
    trace = calltrace.load(out)
    assert f"program:             {fixture('workers')}" in lines
    assert "calls:               17" in lines and "end:                 exited with status 0" in lines
    threads = lines[lines.index("threads (4):") + 1:]
    assert [(line.split()[0], line.split()[1]) for line in threads] == [
        (str(t.tid), str(len(t.calls))) for t in trace.threads]
    assert [line.split(" calls  ")[1] for line in threads] == [
        ("[main] " if t.main else "") + t.name for t in trace.threads]
    assert sorted(line.split(" calls  ")[1] for line in threads) == [
        "[main] workers", "worker-1", "worker-2", "worker-3"]
