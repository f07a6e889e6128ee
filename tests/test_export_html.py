"""The HTML export opened in headless Chromium: names render, the search
(read from location.hash) finds calls and filters the table, hostile names
stay text, and the page works with no network."""
from __future__ import annotations

import html
import json
import re
import subprocess
import tempfile

import pytest

import calltrace
from calltrace.export.html import Budget, budget
from conftest import fixture, require_tool, run_cli
from postmortem_util import leaf, write, write_demo

HOSTILE = "</script><script>document.title='pwned'</script><img src=x onerror=alert(1)>"


def chromium_dom(page, hash_: str = "") -> str:
    chromium = require_tool("chromium", "chromium")
    with tempfile.TemporaryDirectory() as profile:
        p = subprocess.run([chromium, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                            "--no-first-run", "--disable-background-networking",
                            "--disable-component-update", "--disable-sync", f"--user-data-dir={profile}",
                            "--window-size=1200,900", "--virtual-time-budget=2000", "--dump-dom",
                            f"file://{page}{hash_}"], capture_output=True, timeout=120)
    assert p.returncode == 0, p.stderr.decode(errors="replace")[-2000:]
    return p.stdout.decode()


def export_html(src, out, *extra) -> str:
    run_cli("export", src, "-f", "html", "-o", out, *extra, check=True)
    return str(out)


def table_rows(dom: str) -> list[tuple[str, bool]]:
    """(function name, visible) per row of the function table."""
    body = dom[dom.index('<table id="functions">'):]
    rows = re.findall(r'<tr data-fn="\d+"( hidden="")?( class="[^"]*")?><td class="name">(.*?)</td>', body)
    return [(html.unescape(name), not hidden) for hidden, _, name in rows]


def text_of(dom: str, id_: str) -> str:
    m = re.search(rf'id="{id_}"[^>]*>(.*?)<', dom)
    return html.unescape(m.group(1)) if m else None


@pytest.fixture(scope="module")
def demo_page(tmp_path_factory):
    d = tmp_path_factory.mktemp("html")
    return export_html(write_demo(d / "demo.json"), d / "demo.html")


def test_names_render(demo_page):
    dom = chromium_dom(demo_page)
    assert table_rows(dom) == [(n, True) for n in ("report", "fib", "main", "compute", "work", "parse")]
    assert "<h1>prog - calltrace</h1>" in dom
    assert re.search(r'<h2>thread 100 \[main\] \(10 calls\)</h2>', dom)
    assert re.search(r'<h2>thread 101 worker-1 \(2 calls\)</h2>', dom)
    assert re.search(r'<body data-drawn="12"', dom)     # every call drawn on the timeline
    assert text_of(dom, "matches") == ""


@pytest.mark.parametrize("term, calls, visible", [
    ("fib", "6 calls in 1 functions match", ["fib"]),
    ("R", "4 calls in 3 functions match", ["report", "work", "parse"]),
    ("co", "1 calls in 1 functions match", ["compute"]),
    ("zzz", "0 calls in 0 functions match", []),
])
def test_search_from_hash(demo_page, term, calls, visible):
    dom = chromium_dom(demo_page, f"#search={term}")
    assert text_of(dom, "matches") == calls
    assert [n for n, shown in table_rows(dom) if shown] == visible
    assert re.search(r'<input id="search" type="search"', dom)


def test_hostile_names_stay_text(tmp_path):
    src = write(tmp_path / "h.json", [(1, HOSTILE, [("main", 0, 100, [
        leaf(HOSTILE, 10, 50, args=[{"name": "s", "type": "char *", "value": HOSTILE}])])])])
    page = export_html(src, tmp_path / "h.html", "--title", HOSTILE)
    text = open(page).read()
    assert "<script>document" not in text and "<img" not in text
    dom = chromium_dom(page, "#search=script")
    assert "pwned</title>" not in dom and "<img" not in dom
    assert dom.count("<script") == 2                        # the data and the page's own script
    assert f"<h1>{html.escape(HOSTILE, quote=False)} - calltrace</h1>" in dom
    assert table_rows(dom) == [("main", False), (HOSTILE, True)]
    assert text_of(dom, "matches") == "1 calls in 1 functions match"


def test_self_contained(demo_page):
    text = open(demo_page).read()
    assert not re.search(r"(src|href)\s*=", text)          # nothing loaded from elsewhere
    assert "http://" not in text and "https://" not in text
    assert "default-src 'none'" in text                     # and the page may not fetch anything


def test_big_trace_keeps_longest_calls(tmp_path):
    # 1 root of 1 ms and 300 children: 100 of 4000 ns, 200 of 1000 ns
    kids = [leaf("slow" if i < 100 else "quick", 10 + i * 3000, 10 + i * 3000 + (4000 if i < 100 else 1000))
            for i in range(300)]
    src = write(tmp_path / "b.json", [(1, None, [("main", 0, 1_000_000, kids)])])
    trace = calltrace.load(src)
    assert [budget(trace, n) for n in (1000, 301, 300, 150, 50, 1)] == [
        Budget(), Budget(), Budget(512, 1024, 199), Budget(512, 1024, 49), Budget(2048, 4096, 49),
        Budget(2048, 4096, 0)]
    page = export_html(src, tmp_path / "b.html", "--max-calls", "150")
    dom = chromium_dom(page)
    assert text_of(dom, "note") == ("showing 150 of 301 calls: those lasting at least 1.024 us "
                                    "and some of those lasting at least 512 ns")
    assert re.search(r'<h2>thread 1 \[main\] \(150 calls\)</h2>', dom)
    assert re.search(r'<body data-drawn="150"', dom)
    # the kept calls: main, every slow one, and the first 49 quick ones
    data = json.loads(re.search(r'<script id="data" type="application/json">(.*?)</script>',
                                open(page).read()).group(1))
    calls = data["threads"][0]["calls"]
    starts = calls[2::4]
    assert starts == [0] + [10 + i * 3000 for i in range(149)]
    assert sorted(n for n, _ in table_rows(dom)) == ["main", "quick", "slow"]  # the table keeps all


def test_real_trace_page(tmp_path):
    src = tmp_path / "n.json"
    run_cli("run", "-q", "-o", src, fixture("names"), check=True)
    dom = chromium_dom(export_html(src, tmp_path / "n.html"), "#search=shapes%3A%3Ascale")
    assert text_of(dom, "matches") == "2 calls in 2 functions match"
    assert sorted(n for n, shown in table_rows(dom) if shown) == ["shapes::scale(double)", "shapes::scale(int)"]
    assert len(table_rows(dom)) == 6
