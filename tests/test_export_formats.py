"""speedscope, folded and SVG exports: structure, exact content, escaping."""
from __future__ import annotations

import json
import xml.etree.ElementTree as ET

import calltrace
from conftest import fixture, run_cli
from postmortem_util import leaf, write, write_demo

SVG = "{http://www.w3.org/2000/svg}"
HOSTILE = ["<script>alert(1)</script>", "a&b", 'q"uote', "x;y", "</svg>"]


def export(src, tmp_path, fmt, *extra) -> str:
    out = tmp_path / f"out.{fmt}"
    run_cli("export", src, "-f", fmt, "-o", out, *extra, check=True)
    return out.read_text()


def check_speedscope(doc: dict) -> list[list[tuple]]:
    """The file-format rules for evented profiles; returns (O/C, name, at) lists."""
    assert doc["$schema"] == "https://www.speedscope.app/file-format-schema.json"
    frames = doc["shared"]["frames"]
    assert all(isinstance(f["name"], str) for f in frames)
    out = []
    for p in doc["profiles"]:
        assert p["type"] == "evented" and p["unit"] == "nanoseconds"
        stack, last, evs = [], p["startValue"], []
        for ev in p["events"]:
            assert ev["type"] in ("O", "C") and 0 <= ev["frame"] < len(frames)
            assert ev["at"] >= last, ev
            last = ev["at"]
            if ev["type"] == "O":
                stack.append(ev["frame"])
            else:
                assert stack.pop() == ev["frame"]
            evs.append((ev["type"], frames[ev["frame"]]["name"], ev["at"]))
        assert stack == [] and last <= p["endValue"]
        out.append(evs)
    assert 0 <= doc["activeProfileIndex"] < len(doc["profiles"])
    return out


def test_speedscope_demo(tmp_path):
    doc = json.loads(export(write_demo(tmp_path / "d.json"), tmp_path, "speedscope"))
    profiles = check_speedscope(doc)
    assert [p["name"] for p in doc["profiles"]] == ["main (tid 100)", "worker-1 (tid 101)"]
    assert profiles[1] == [("O", "work", 1000), ("O", "fib", 1200), ("C", "fib", 5200), ("C", "work", 6000)]
    assert profiles[0][:6] == [("O", "main", 0), ("O", "parse", 100), ("C", "parse", 600),
                               ("O", "parse", 700), ("C", "parse", 1000), ("O", "compute", 1500)]
    assert len(profiles[0]) == 20 and profiles[0][-1] == ("C", "main", 10000)


def test_speedscope_real_deep_trace(tmp_path):
    src = tmp_path / "deep.json"
    run_cli("run", "-q", "-o", src, fixture("deep"), check=True)
    profiles = check_speedscope(json.loads(export(src, tmp_path, "speedscope")))
    assert [e[:2] for e in profiles[0]] == ([("O", "main")] + [("O", "down")] * 5000 +
                                            [("C", "down")] * 5000 + [("C", "main")])


def test_folded_demo(tmp_path):
    assert export(write_demo(tmp_path / "d.json"), tmp_path, "folded") == """\
main 1700
main;compute 1100
main;compute;fib 250
main;compute;fib;fib 400
main;compute;fib;fib;fib 250
main;compute;report 5500
main;parse 800
work 1000
work;fib 4000
"""


def test_folded_real_trace_adds_up(tmp_path):
    src = tmp_path / "r.json"
    run_cli("run", "-q", "-o", src, fixture("recursion"), check=True)
    lines = export(src, tmp_path, "folded").splitlines()
    trace = calltrace.load(src)
    main = next(iter(trace.threads[0].calls))
    assert sum(int(line.rsplit(" ", 1)[1]) for line in lines) == main.duration_ns
    stacks = [line.rsplit(" ", 1)[0] for line in lines]
    assert "main;apply;square" in stacks and "main;fib;fib;fib;fib;fib" in stacks
    assert len(stacks) == len(set(stacks))


def test_svg_flame_graph(tmp_path):
    root = ET.fromstring(export(write_demo(tmp_path / "d.json"), tmp_path, "svg", "--width", "1000"))
    boxes = {}
    for g in root.iter(f"{SVG}g"):
        title = g.find(f"{SVG}title").text
        rect = g.find(f"{SVG}rect")
        boxes[title] = (float(rect.get("x")), float(rect.get("width")), int(rect.get("y")))
    assert len(boxes) == 9   # one box per distinct call path
    main = boxes["main (1 calls, total 10.000 us, self 1.700 us, 66.67%)"]
    work = boxes["work (1 calls, total 5.000 us, self 1.000 us, 33.33%)"]
    assert (main[0], round(main[1], 2), round(work[0], 2), round(work[1], 2)) == (10.0, 653.33, 663.33, 326.67)
    depths = sorted({y for _, _, y in boxes.values()}, reverse=True)
    assert len(depths) == 5 and main[2] == work[2] == depths[0]   # roots at the bottom
    labels = [t.text for t in root.iter(f"{SVG}text")]
    assert labels[0] == "prog - flame graph (9 boxes, 15.000 us)" and "compute" in labels


def test_svg_and_folded_escape_names(tmp_path):
    roots = [leaf(n, i * 100, i * 100 + 90) for i, n in enumerate(HOSTILE)]
    src = write(tmp_path / "h.json", [(1, None, [("main", 0, 1000, roots)])])
    text = export(src, tmp_path, "svg", "--title", "<b>t</b>")
    assert "<script>" not in text and "</svg>" not in text[:-8] and "<b>" not in text
    root = ET.fromstring(text)     # well-formed XML despite the names
    titles = [g.find(f"{SVG}title").text.split(" (")[0] for g in root.iter(f"{SVG}g")]
    assert sorted(titles) == sorted(HOSTILE + ["main"])
    assert [t.text for t in root.iter(f"{SVG}text")][0].startswith("<b>t</b> - flame graph")
    folded = export(src, tmp_path, "folded").splitlines()
    assert "main;x:y 90" in folded and "main;<script>alert(1)</script> 90" in folded


def test_output_to_a_device_or_fifo_writes_into_it(tmp_path):
    """-o /dev/null or a named pipe: the output goes into it; the path is
    never replaced by a file (as root that would replace the device node)."""
    import os
    import stat
    import threading
    src = write_demo(tmp_path / "demo.json")
    for args in (["export", src, "-f", "folded", "-o", "/dev/null"], ["convert", src, "-o", "/dev/null"]):
        assert run_cli(*args).returncode == 0
        assert stat.S_ISCHR(os.stat("/dev/null").st_mode)
    # /dev/stdout into a file: the file gets it, the /dev/stdout link stays
    with open(tmp_path / "out.folded", "wb") as f:
        import subprocess
        import sys
        subprocess.run([sys.executable, "-m", "calltrace", "export", src, "-f", "folded", "-o", "/dev/stdout"],
                       stdout=f, cwd=tmp_path, timeout=120, check=True)
    assert os.path.islink("/dev/stdout")
    assert (tmp_path / "out.folded").read_bytes() == run_cli("export", src, "-f", "folded", "-o", "-").stdout
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    got = []
    reader = threading.Thread(target=lambda: got.append(open(fifo, "rb").read()))
    reader.start()
    assert run_cli("export", src, "-f", "folded", "-o", fifo).returncode == 0
    reader.join(60)
    assert stat.S_ISFIFO(os.stat(fifo).st_mode)
    assert got[0] == run_cli("export", src, "-f", "folded", "-o", "-").stdout
