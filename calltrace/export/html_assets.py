"""Style and script of the HTML export (kept apart from the writer so each
stays readable). The script builds the whole page from the JSON data
element and only ever inserts text with textContent."""

STYLE = """
body{font:13px/1.4 system-ui,sans-serif;margin:0;color:#222;background:#fafafa}
header{padding:8px 14px;background:#263238;color:#eee}
header h1{font-size:16px;margin:0 0 4px}
header dl{margin:0;display:flex;flex-wrap:wrap;gap:2px 16px;font-size:12px}
header dt{color:#9ab}header dd{margin:0 0 0 4px}
#bar{padding:6px 14px;display:flex;gap:12px;align-items:center;border-bottom:1px solid #ddd;background:#fff;position:sticky;top:0;z-index:2}
#search{width:280px;padding:3px 6px}
#note{color:#a50}
.lane{margin:6px 14px}.lane h2{font-size:13px;margin:4px 0}
.lane canvas{display:block;width:100%;border:1px solid #ccc;background:#fff;cursor:grab}
#tip{position:fixed;pointer-events:none;background:#fffbe6;border:1px solid #cb9;padding:4px 6px;font-size:12px;display:none;max-width:600px;white-space:pre-wrap;z-index:3}
#details{margin:6px 14px;font-family:monospace;white-space:pre-wrap}
table{border-collapse:collapse;margin:6px 14px 20px;font-size:12px}
th,td{padding:2px 8px;border-bottom:1px solid #eee;text-align:right}
tbody tr{cursor:pointer}th{cursor:pointer;background:#eceff1;position:sticky;top:34px}
td.name,th.name{text-align:left;font-family:monospace}
tr.hit td.name{background:#ffe0a0}
"""

SCRIPT = r"""
"use strict";
const D = JSON.parse(document.getElementById("data").textContent);
const F = D.functions, ROW = 16, MAXROWS = 1000;
const el = (tag, text, cls) => { const e = document.createElement(tag);
  if (text !== undefined) e.textContent = text; if (cls) e.className = cls; return e; };
function fmt(ns) {
  if (ns < 1e3) return ns + " ns"; if (ns < 1e6) return (ns / 1e3).toFixed(3) + " us";
  if (ns < 1e9) return (ns / 1e6).toFixed(3) + " ms"; return (ns / 1e9).toFixed(3) + " s";
}
function hue(s) { let h = 0; for (let i = 0; i < s.length; i++) h = (h * 31 + s.charCodeAt(i)) | 0;
  return Math.abs(h) % 360; }

// Header: title, metadata, search bar.
const head = el("header"); head.appendChild(el("h1", D.title + " - calltrace"));
const dl = el("dl");
for (const [k, v] of D.meta) { if (v === null || v === undefined) continue;
  dl.appendChild(el("dt", k)); dl.appendChild(el("dd", String(v))); }
head.appendChild(dl); document.body.appendChild(head);
const bar = el("div"); bar.id = "bar";
const search = el("input"); search.id = "search"; search.type = "search";
search.placeholder = "search functions (substring)";
const matches = el("span", ""); matches.id = "matches";
bar.appendChild(search); bar.appendChild(matches);
bar.appendChild(el("span", "wheel: zoom, drag: pan, double-click: reset", "help"));
if (D.shown < D.total) { const n = el("span", "showing " + D.shown + " of " + D.total +
  " calls: those lasting at least " + fmt(D.full) + " and some of those lasting at least " + fmt(D.floor));
  n.id = "note"; bar.appendChild(n); }
document.body.appendChild(bar);

// Threads: calls as flat arrays [function, depth, start, duration, ...].
let t0 = Infinity, t1 = 0;
const lanes = D.threads.map(t => {
  const c = t.calls, n = c.length / 4; let depth = 0;
  for (let i = 0; i < n; i++) { depth = Math.max(depth, c[4 * i + 1]);
    t0 = Math.min(t0, c[4 * i + 2]); t1 = Math.max(t1, c[4 * i + 2] + c[4 * i + 3]); }
  const box = el("div", undefined, "lane"); box.appendChild(el("h2", t.label + " (" + n + " calls)"));
  const cv = el("canvas"); box.appendChild(cv); document.body.appendChild(box);
  return {t, c, n, rows: Math.min(depth + 1, MAXROWS), cv};
});
if (!(t0 < t1)) { t0 = 0; t1 = 1; }
const full = [t0, t1]; let view = [t0, t1];
let hits = null;   // Set of matching function indexes, or null without a search
const tip = el("div"); tip.id = "tip"; document.body.appendChild(tip);
const details = el("div"); details.id = "details"; document.body.appendChild(details);

function draw() {
  let drawn = 0;
  for (const L of lanes) {
    const w = L.cv.clientWidth || 800, h = L.rows * ROW, dpr = window.devicePixelRatio || 1;
    L.cv.width = w * dpr; L.cv.height = h * dpr; L.cv.style.height = h + "px";
    const g = L.cv.getContext("2d"); g.scale(dpr, dpr); g.font = "11px sans-serif";
    g.textBaseline = "middle";
    const k = w / (view[1] - view[0]), c = L.c; L.k = k; L.w = w;
    const thin = new Array(L.rows).fill(-1);   // last pixel column marked per row
    for (let i = 0; i < L.n; i++) {
      const d = c[4 * i + 1]; if (d >= MAXROWS) continue;
      const s = c[4 * i + 2], u = c[4 * i + 3];
      const x0 = (s - view[0]) * k, x1 = (s + u - view[0]) * k;
      if (x1 < 0 || x0 > w) continue;
      const fi = c[4 * i], name = F[fi][0], on = !hits || hits.has(fi);
      if (x1 - x0 < 0.3) {
        // Too thin to draw alone: one mark per pixel column shows where
        // calls are (a matching call wins the column during a search).
        const px = Math.floor(x0);
        if (thin[d] === px && !(hits && on)) continue;
        thin[d] = px; g.fillStyle = on ? (hits ? "hsl(30,100%,55%)" : "#9aa") : "#e4e4e4";
        g.fillRect(px, d * ROW, 1, ROW - 1); drawn++; continue;
      }
      g.fillStyle = on ? (hits ? "hsl(30,100%,55%)" : "hsl(" + hue(name) + ",60%,72%)") : "#e4e4e4";
      const x = Math.max(x0, -1), bw = Math.min(x1, w + 1) - x;
      g.fillRect(x, d * ROW, Math.max(bw, 0.5), ROW - 1); drawn++;
      if (bw > 24) { g.fillStyle = on ? "#111" : "#999";
        const fit = Math.floor((bw - 6) / 6.2);
        g.fillText(name.length <= fit ? name : name.slice(0, Math.max(fit - 1, 1)) + "\u2026",
                   x + 3, d * ROW + ROW / 2); }
    }
  }
  document.body.dataset.drawn = drawn;
}

function callAt(L, ev) {
  const r = L.cv.getBoundingClientRect(), x = ev.clientX - r.left, d = Math.floor((ev.clientY - r.top) / ROW);
  const t = view[0] + x / L.k, c = L.c; let best = -1;
  for (let i = 0; i < L.n; i++)
    if (c[4 * i + 1] === d && c[4 * i + 2] <= t && t <= c[4 * i + 2] + c[4 * i + 3]) best = i;
  return best;
}
function describe(L, i) {
  const c = L.c, fi = c[4 * i], extra = L.t.extra[i];
  return (extra || F[fi][0]) + "\nduration " + fmt(c[4 * i + 3]) + ", start " + fmt(c[4 * i + 2]) +
    ", depth " + c[4 * i + 1] + "\n" + L.t.label;
}
for (const L of lanes) {
  let drag = null;
  L.cv.addEventListener("wheel", ev => { ev.preventDefault();
    const r = L.cv.getBoundingClientRect(), at = view[0] + (ev.clientX - r.left) / L.k;
    const f = ev.deltaY > 0 ? 1.25 : 0.8, span = Math.max((view[1] - view[0]) * f, 10);
    const a = at - (at - view[0]) * span / (view[1] - view[0]); view = [a, a + span]; draw(); });
  L.cv.addEventListener("mousedown", ev => { drag = [ev.clientX, view[0], view[1]]; });
  window.addEventListener("mouseup", () => { drag = null; });
  L.cv.addEventListener("mousemove", ev => {
    if (drag) { const dt = (ev.clientX - drag[0]) / L.k; view = [drag[1] - dt, drag[2] - dt]; draw(); return; }
    const i = callAt(L, ev);
    if (i < 0) { tip.style.display = "none"; return; }
    tip.textContent = describe(L, i); tip.style.display = "block";
    tip.style.left = (ev.clientX + 12) + "px"; tip.style.top = (ev.clientY + 12) + "px"; });
  L.cv.addEventListener("mouseleave", () => { tip.style.display = "none"; });
  L.cv.addEventListener("dblclick", () => { view = full.slice(); draw(); });
  L.cv.addEventListener("click", ev => { const i = callAt(L, ev); if (i >= 0) details.textContent = describe(L, i); });
}

// Function table, sortable by any column.
const cols = [["function", 0], ["calls", 1], ["total", 2], ["self", 3], ["average", -1], ["min", 4], ["max", 5]];
const table = el("table"); table.id = "functions";
const hr = el("tr"); const tbody = el("tbody");
const val = (f, j) => j === -1 ? (f[1] ? Math.floor(f[2] / f[1]) : 0) : f[j];
let order = F.map((f, i) => i);
function fill() {
  tbody.textContent = "";
  for (const i of order) { const f = F[i]; if (!f[1]) continue;
    const tr = el("tr"); tr.dataset.fn = i;
    tr.addEventListener("click", () => { search.value = f[0]; search.dispatchEvent(new Event("input")); });
    for (const [name, j] of cols) tr.appendChild(j === 0 ? el("td", f[0], "name")
      : el("td", j === 1 ? String(f[1]) : fmt(val(f, j))));
    tbody.appendChild(tr); }
  mark();
}
for (const [name, j] of cols) { const th = el("th", name, j === 0 ? "name" : "");
  th.addEventListener("click", () => { order.sort((a, b) => j === 0 ? (F[a][0] < F[b][0] ? -1 : 1)
    : val(F[b], j) - val(F[a], j)); fill(); });
  hr.appendChild(th); }
const thead = el("thead"); thead.appendChild(hr); table.appendChild(thead); table.appendChild(tbody);
document.body.appendChild(table);

function mark() {
  for (const tr of tbody.children) { const on = !hits || hits.has(+tr.dataset.fn);
    tr.hidden = !on; tr.classList.toggle("hit", !!hits && on); }
}
function find(term) {
  term = term.trim().toLowerCase();
  if (!term) { hits = null; matches.textContent = ""; }
  else {
    hits = new Set(); F.forEach((f, i) => { if (f[0].toLowerCase().includes(term)) hits.add(i); });
    let n = 0; for (const L of lanes) for (let i = 0; i < L.n; i++) if (hits.has(L.c[4 * i])) n++;
    matches.textContent = n + " calls in " + hits.size + " functions match";
  }
  mark(); draw();
}
search.addEventListener("input", () => { find(search.value);
  history.replaceState(null, "", search.value ? "#search=" + encodeURIComponent(search.value) : "#"); });
fill();
const m = /^#search=(.*)$/.exec(location.hash);
if (m) { search.value = decodeURIComponent(m[1]); find(search.value); } else draw();
window.addEventListener("resize", draw);
"""
