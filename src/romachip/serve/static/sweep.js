// romachip's sweep page: the feasible designs of a sweep as an SVG scatter over two chosen metrics
// (plain JavaScript, no library). Data from /api/sweep; a picked design exports as chip YAML.
"use strict";

const $ = (id) => document.getElementById(id);
const SVG = "http://www.w3.org/2000/svg";
const W = 640, H = 420, PAD = { left: 70, right: 16, top: 16, bottom: 48 };
const state = { doc: null, picked: null };

function showError(message) {
  $("error").textContent = message;
  $("error").hidden = !message;
}

function fmt(x) {
  if (x === null || x === undefined) return "-";
  if (typeof x !== "number") return String(x);
  return Math.abs(x) >= 1e4 ? x.toExponential(3) : Number(x.toPrecision(4)).toString();
}

function tick(x) { // short axis labels: 65.2k, 1.5G
  const a = Math.abs(x);
  for (const [v, u] of [[1e12, "T"], [1e9, "G"], [1e6, "M"], [1e3, "k"]]) if (a >= v) return `${Number((x / v).toPrecision(3))}${u}`;
  return Number(x.toPrecision(3)).toString();
}

function workload() {
  return state.doc.workloads.find((w) => w.workload === $("workload").value);
}

function fillSelect(select, names, chosen) {
  select.replaceChildren(...names.map((n) => Object.assign(document.createElement("option"), { value: n, textContent: n })));
  if (names.includes(chosen)) select.value = chosen;
}

function setupWorkload() {
  const w = workload();
  const names = w.metrics.map((m) => m.name);
  const objectives = w.objectives.map((o) => o.metric).filter((m) => names.includes(m));
  fillSelect($("x-metric"), names, objectives[0] || names[0]);
  fillSelect($("y-metric"), names, objectives[1] || names[1] || names[0]);
  state.picked = null;
  showDesign(null);
  draw();
}

function scale(values, lo, hi) {
  let min = Math.min(...values), max = Math.max(...values);
  if (min === max) { min -= Math.abs(min) * 0.05 || 1; max += Math.abs(max) * 0.05 || 1; }
  const pad = (max - min) * 0.05;
  min -= pad; max += pad;
  return { f: (v) => lo + ((v - min) / (max - min)) * (hi - lo), min, max };
}

function el(name, attrs, text) {
  const node = document.createElementNS(SVG, name);
  for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, v);
  if (text !== undefined) node.textContent = text;
  return node;
}

function draw() {
  const w = workload();
  const xm = $("x-metric").value, ym = $("y-metric").value;
  const points = w.points.filter((p) => (!$("front-only").checked || p.front) && p.metrics[xm] !== null && p.metrics[ym] !== null);
  const svg = $("plot");
  svg.replaceChildren();
  if (!points.length) {
    svg.append(el("text", { x: W / 2, y: H / 2, "text-anchor": "middle" }, "no feasible design has both metrics"));
    return;
  }
  const sx = scale(points.map((p) => p.metrics[xm]), PAD.left, W - PAD.right);
  const sy = scale(points.map((p) => p.metrics[ym]), H - PAD.bottom, PAD.top);
  svg.append(el("line", { x1: PAD.left, y1: H - PAD.bottom, x2: W - PAD.right, y2: H - PAD.bottom }));
  svg.append(el("line", { x1: PAD.left, y1: PAD.top, x2: PAD.left, y2: H - PAD.bottom }));
  for (let i = 0; i <= 4; i++) {
    const vx = sx.min + ((sx.max - sx.min) * i) / 4, vy = sy.min + ((sy.max - sy.min) * i) / 4;
    svg.append(el("text", { x: sx.f(vx), y: H - PAD.bottom + 16, "text-anchor": "middle" }, tick(vx)));
    svg.append(el("text", { x: PAD.left - 6, y: sy.f(vy) + 4, "text-anchor": "end" }, tick(vy)));
  }
  const goal = (m) => (w.metrics.find((x) => x.name === m).goal === "max" ? "higher is better" : "lower is better");
  svg.append(el("text", { x: (PAD.left + W - PAD.right) / 2, y: H - 8, "text-anchor": "middle" }, `${xm} (${goal(xm)})`));
  svg.append(el("text", { x: 14, y: (PAD.top + H - PAD.bottom) / 2, "text-anchor": "middle",
                          transform: `rotate(-90 14 ${(PAD.top + H - PAD.bottom) / 2})` }, `${ym} (${goal(ym)})`));
  // front points last, so they sit on top
  for (const p of [...points].sort((a, b) => a.front - b.front)) {
    const c = el("circle", { cx: sx.f(p.metrics[xm]), cy: sy.f(p.metrics[ym]), r: p.front ? 6 : 4.5, tabindex: 0,
                             "data-key": p.key, "aria-label": `design ${p.key.slice(0, 10)}: ${xm} ${fmt(p.metrics[xm])}, ${ym} ${fmt(p.metrics[ym])}` });
    c.classList.toggle("front", p.front);
    c.classList.toggle("base", p.base);
    c.classList.toggle("picked", state.picked === p.key);
    c.append(el("title", {}, `${p.key.slice(0, 10)}${p.front ? " (front)" : ""}${p.base ? " (base)" : ""}`));
    c.addEventListener("mouseenter", () => showDesign(p));
    c.addEventListener("focus", () => showDesign(p));
    c.addEventListener("click", () => pick(p));
    c.addEventListener("keydown", (e) => { if (e.key === "Enter" || e.key === " ") { e.preventDefault(); pick(p); } });
    svg.append(c);
  }
  $("status").textContent = `${points.length} designs shown (${w.points.filter((p) => p.front).length} on the front; ${w.rows} rows in the sweep)`;
}

function showDesign(p) {
  const dl = $("design");
  $("design-empty").hidden = !!p;
  if (!p) { dl.replaceChildren(); return; }
  $("design-title").textContent = `Design ${p.key.slice(0, 10)}${p.front ? " (front)" : ""}${p.base ? " (base)" : ""}`;
  const rows = [...Object.entries(p.axes), ...Object.entries(p.metrics)];
  dl.replaceChildren(...rows.flatMap(([k, v]) => [
    Object.assign(document.createElement("dt"), { textContent: k }),
    Object.assign(document.createElement("dd"), { textContent: fmt(v) }),
  ]));
}

function pick(p) {
  state.picked = p.key;
  showDesign(p);
  $("export").disabled = false;
  $("exported").textContent = "";
  for (const c of $("plot").querySelectorAll("circle")) c.classList.toggle("picked", c.dataset.key === p.key);
}

async function exportPicked() {
  showError("");
  const w = workload();
  const r = await fetch(`/api/sweep/export?workload=${encodeURIComponent(w.workload)}&key=${encodeURIComponent(state.picked)}`);
  if (!r.ok) {
    let message = `${r.status} ${r.statusText}`;
    try { message = (await r.json()).error.message; } catch (_) { /* keep the status */ }
    showError(`Could not export: ${message}`);
    return;
  }
  const text = await r.text();
  const path = r.headers.get("X-Romachip-Path");
  const a = Object.assign(document.createElement("a"), {
    href: URL.createObjectURL(new Blob([text], { type: "application/yaml" })), download: path.split("/").pop(),
  });
  a.click();
  $("exported").textContent = `written to ${path}: romachip simulate --chip ${path}`;
}

async function start() {
  try {
    const r = await fetch("/api/sweep");
    if (!r.ok) throw new Error(`${r.status} ${r.statusText}`);
    state.doc = await r.json();
  } catch (err) {
    showError(`Could not read the sweep: ${err.message}`);
    return;
  }
  $("sweep-name").textContent = `${state.doc.sweep} (${state.doc.folder})`;
  fillSelect($("workload"), state.doc.workloads.map((w) => w.workload));
  setupWorkload();
}

$("workload").addEventListener("change", setupWorkload);
$("x-metric").addEventListener("change", draw);
$("y-metric").addEventListener("change", draw);
$("front-only").addEventListener("change", draw);
$("export").addEventListener("click", () => exportPicked().catch((err) => showError(err.message)));
start();
