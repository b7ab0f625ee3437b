// ganforge explorer page: plain JS, no build step, no libraries, nothing fetched from
// anywhere but this server.
"use strict";

const $ = (id) => document.getElementById(id);
const REFRESH_MS = 3000;  // run view refresh while the run is still training
const COLORS = ["#2f6fdf", "#d9482b", "#2a9d5c", "#8e44ad", "#e69f00", "#444444"];

const state = {
  info: null,
  seed: 0,
  seedZ: [],        // the latent of the current seed (what Reset returns to)
  z: [],            // the per-dimension sliders' values
  truncation: 1,
  directions: [],   // [{name, explained, vector}]
  alphas: [],       // position on each direction slider
  classIndex: null, // conditional models only
};
// Counters the browser test reads: requests sent vs. images shown.
window.explorer = { sent: 0, shown: 0, state };

function showError(message) {
  const el = $("error");
  el.textContent = message;
  el.hidden = !message;
}

async function api(path, options) {
  const response = await fetch(path, options);
  if (!response.ok) {
    let message = `${response.status} ${response.statusText}`;
    try { message = (await response.json()).error || message; } catch (e) { /* not JSON */ }
    throw new Error(`${path}: ${message}`);
  }
  return response;
}

const fmt = (x, digits = 2) => Number(x).toFixed(digits);

// ---------------------------------------------------------------- explore view

/** The latent actually sent: the sliders' z moved along each direction. */
function currentZ() {
  const z = state.z.slice();
  state.directions.forEach((d, i) => {
    const a = state.alphas[i] || 0;
    if (a !== 0) d.vector.forEach((v, j) => { z[j] += a * v; });
  });
  return z;
}

// Coalesced image updates: at most one request in flight; while it runs, later changes only
// mark the state dirty, and when it returns one request is sent for the latest state.
let inFlight = false;
let dirty = false;
let shownUrl = null;

function requestImage() {
  dirty = true;
  if (!inFlight) pump();
}

async function pump() {
  inFlight = true;
  while (dirty) {
    dirty = false;
    const body = { z: currentZ(), truncation: state.truncation };
    if (state.classIndex !== null) body.c = state.classIndex;
    const t0 = performance.now();
    window.explorer.sent += 1;
    try {
      const r = await api("/api/image", {
        method: "POST", headers: { "Content-Type": "application/json" },
        body: JSON.stringify(body),
      });
      const url = URL.createObjectURL(await r.blob());
      const img = $("image");
      await new Promise((resolve) => { img.onload = resolve; img.onerror = resolve; img.src = url; });
      if (shownUrl) URL.revokeObjectURL(shownUrl);
      shownUrl = url;
      window.explorer.shown += 1;
      img.dataset.renders = String(window.explorer.shown);
      const ms = Math.round(performance.now() - t0);
      $("image-status").textContent =
        `seed ${state.seed} · ψ ${fmt(state.truncation)} · ${ms} ms`;
      showError("");
    } catch (e) {
      showError(e.message);
    }
  }
  inFlight = false;
}

/** Wire the range input in `box`: store its value, keep its <output> in step, redraw. */
function onSlide(box, store) {
  const input = box.querySelector("input");
  input.addEventListener("input", () => {
    store(Number(input.value));
    box.querySelector("output").textContent = fmt(input.value);
    requestImage();
  });
}

function buildSliders(zDim) {
  const grid = $("sliders");
  grid.textContent = "";
  for (let i = 0; i < zDim; i++) {
    const row = document.createElement("label");
    row.className = "slider";
    row.innerHTML = `<span>z${i}</span><input type="range" min="-3" max="3" step="0.01"
      data-dim="${i}" aria-label="latent dimension ${i}"><output>0.00</output>`;
    onSlide(row, (v) => { state.z[i] = v; });
    grid.appendChild(row);
  }
  $("z-dim").textContent = `(${zDim} dimensions)`;
}

function syncSliders() {
  document.querySelectorAll("#sliders .slider").forEach((row, i) => {
    row.querySelector("input").value = String(state.z[i]);
    row.querySelector("output").textContent = fmt(state.z[i]);
  });
  document.querySelectorAll("#directions .direction").forEach((box, i) => {
    box.querySelector("input").value = String(state.alphas[i] || 0);
    box.querySelector("output").textContent = fmt(state.alphas[i] || 0);
  });
  $("truncation").value = String(state.truncation);
  $("truncation-value").textContent = fmt(state.truncation);
}

async function loadSeed(seed) {
  const r = await api(`/api/latent?seed=${seed}`);
  const data = await r.json();
  state.seed = data.seed;
  state.seedZ = data.z;
  state.z = data.z.slice();
  state.alphas = state.directions.map(() => 0);
  syncSliders();
  requestImage();
}

function randomSeed() {
  return Math.floor(Math.random() * 1e9);
}

function buildDirections(list) {
  const box = $("directions");
  box.textContent = "";
  state.directions = list;
  state.alphas = list.map(() => 0);
  list.forEach((d, i) => {
    const div = document.createElement("div");
    div.className = "direction";
    div.innerHTML = `<label for="direction-${i}">${d.name} (explains
      ${fmt(100 * d.explained, 1)}%): <output>0.00</output></label>
      <input type="range" id="direction-${i}" min="-3" max="3" step="0.05" value="0">`;
    onSlide(div, (v) => { state.alphas[i] = v; });
    box.appendChild(div);
  });
  if (!list.length) box.textContent = "none";
}

function setupClassPicker(info) {
  // Conditional models: the picker picks the class sent with every image request.
  if (info.kind !== "conditional" || !info.classes.length) return;
  const select = $("class-select");
  info.classes.forEach((name, i) => select.add(new Option(name, String(i))));
  select.disabled = false;
  state.classIndex = 0;
  select.addEventListener("change", () => { state.classIndex = Number(select.value); requestImage(); });
  $("class-picker").hidden = false;
}

// ---------------------------------------------------------------- translate view

let translatedUrl = null;

function setupTranslate(info) {
  // Translation models: upload an image, show its translation (one direction per button).
  const input = $("translate-file");
  const select = $("translate-direction");
  info.directions.forEach((d) => select.add(new Option(d === "a2b" ? "A → B" : "B → A", d)));
  select.disabled = info.directions.length < 2;
  input.disabled = false;
  const send = async () => {
    const file = input.files[0];
    if (!file) return;
    try {
      const r = await api(`/api/translate?direction=${select.value}`, {
        method: "POST", headers: { "Content-Type": "application/octet-stream" }, body: file,
      });
      if (translatedUrl) URL.revokeObjectURL(translatedUrl);
      translatedUrl = URL.createObjectURL(await r.blob());
      const out = $("translate-out");
      await new Promise((resolve) => { out.onload = resolve; out.onerror = resolve; out.src = translatedUrl; });
      out.hidden = false;
      out.dataset.translations = String(Number(out.dataset.translations || 0) + 1);
      showError("");
    } catch (e) {
      showError(e.message);
    }
  };
  input.addEventListener("change", send);
  select.addEventListener("change", send);
}

// ---------------------------------------------------------------- interpolation view

let walkUrl = null;

async function walk(event) {
  event.preventDefault();
  const frames = Number($("frames").value);
  const body = {
    a: $("use-current").checked ? currentZ() : Number($("seed-a").value),
    b: Number($("seed-b").value),
    frames, truncation: state.truncation, spherical: $("spherical").checked,
  };
  if (state.classIndex !== null) body.c = state.classIndex;
  try {
    const r = await api("/api/interpolate", {
      method: "POST", headers: { "Content-Type": "application/json" },
      body: JSON.stringify(body),
    });
    if (walkUrl) URL.revokeObjectURL(walkUrl);
    walkUrl = URL.createObjectURL(await r.blob());
    $("walk").src = walkUrl;
    $("walk").hidden = false;
    const link = $("walk-download");
    link.href = walkUrl;
    link.download = `interpolation-${$("use-current").checked ? "current" : body.a}-${body.b}.gif`;
    link.hidden = false;
    showError("");
  } catch (e) {
    showError(e.message);
  }
}

// ---------------------------------------------------------------- run view

const SVG = "http://www.w3.org/2000/svg";

function svgEl(name, attrs, parent) {
  const el = document.createElementNS(SVG, name);
  for (const [k, v] of Object.entries(attrs)) el.setAttribute(k, String(v));
  if (parent) parent.appendChild(el);
  return el;
}

/** About n round-numbered ticks covering [lo, hi]. */
function ticks(lo, hi, n = 5) {
  if (hi === lo) return [lo];
  const raw = (hi - lo) / n;
  const mag = Math.pow(10, Math.floor(Math.log10(raw)));
  const step = [1, 2, 5, 10].map((m) => m * mag).find((s) => s >= raw) || raw;
  const out = [];
  for (let t = Math.ceil(lo / step) * step; t <= hi + 1e-9 * step; t += step) out.push(t);
  return out;
}

const short = (v) => (Math.abs(v) >= 1000 ? v.toExponential(0) : String(+v.toPrecision(3)));

/** A line chart as SVG: series [{name, points: [[step, value], ...]}], the best step as a
 * dashed line, health events [{step, problem}] as dotted ones. */
function lineChart(title, series, bestStep, events = []) {
  series = series.filter((s) => s.points.length);
  if (!series.length) return null;
  const W = 460, H = 210, L = 46, R = 10, T = 10, B = 24;
  const xs = series.flatMap((s) => s.points.map((p) => p[0]));
  const ys = series.flatMap((s) => s.points.map((p) => p[1]));
  let [x0, x1] = [Math.min(...xs), Math.max(...xs)];
  let [y0, y1] = [Math.min(...ys), Math.max(...ys)];
  if (x0 === x1) { x0 -= 1; x1 += 1; }
  if (y0 === y1) { y0 -= 0.5; y1 += 0.5; }
  const pad = 0.05 * (y1 - y0);
  y0 -= pad; y1 += pad;
  const X = (x) => L + ((x - x0) / (x1 - x0)) * (W - L - R);
  const Y = (y) => T + (1 - (y - y0) / (y1 - y0)) * (H - T - B);

  const box = document.createElement("div");
  box.className = "chart";
  box.innerHTML = `<h3></h3>`;
  box.querySelector("h3").textContent = title;
  const svg = svgEl("svg", { viewBox: `0 0 ${W} ${H}`, role: "img", "aria-label": title }, box);
  for (const t of ticks(y0, y1)) {
    svgEl("line", { x1: L, x2: W - R, y1: Y(t), y2: Y(t), class: "grid" }, svg);
    svgEl("text", { x: L - 4, y: Y(t) + 3, "text-anchor": "end", class: "tick" }, svg)
      .textContent = short(t);
  }
  for (const t of ticks(x0, x1, 6)) {
    svgEl("text", { x: X(t), y: H - 8, "text-anchor": "middle", class: "tick" }, svg)
      .textContent = short(t);
  }
  svgEl("line", { x1: L, x2: L, y1: T, y2: H - B, class: "axis" }, svg);
  svgEl("line", { x1: L, x2: W - R, y1: H - B, y2: H - B, class: "axis" }, svg);
  if (bestStep !== null && bestStep !== undefined && bestStep >= x0 && bestStep <= x1) {
    svgEl("line", { x1: X(bestStep), x2: X(bestStep), y1: T, y2: H - B, class: "best" }, svg);
    svgEl("text", { x: X(bestStep) + 3, y: T + 9, class: "best-label" }, svg)
      .textContent = `best (step ${bestStep})`;
  }
  for (const ev of events) {
    if (ev.step < x0 || ev.step > x1) continue;
    const line = svgEl("line", { x1: X(ev.step), x2: X(ev.step), y1: T, y2: H - B, class: "event" }, svg);
    svgEl("title", {}, line).textContent = `step ${ev.step}: ${ev.problem}`;
  }
  const legend = document.createElement("div");
  legend.className = "legend";
  series.forEach((s, i) => {
    const color = COLORS[i % COLORS.length];
    const d = s.points.map((p, j) => `${j ? "L" : "M"}${X(p[0]).toFixed(1)},${Y(p[1]).toFixed(1)}`).join("");
    svgEl("path", { d, stroke: color, class: "series", "data-name": s.name }, svg);
    if (s.points.length === 1) {
      svgEl("circle", { cx: X(s.points[0][0]), cy: Y(s.points[0][1]), r: 2.5, fill: color }, svg);
    }
    const item = document.createElement("span");
    item.innerHTML = `<i style="background:${color}"></i>`;
    item.append(s.name);
    legend.appendChild(item);
  });
  box.appendChild(legend);
  return box;
}

function seriesOf(records, keys) {
  return keys.map((k) => ({
    name: k,
    points: records.filter((r) => typeof r[k] === "number").map((r) => [r.step, r[k]]),
  }));
}

const run = { metrics: null, steps: [], timer: null, followLatest: true };

function drawCharts() {
  const m = run.metrics;
  const box = $("charts");
  box.textContent = "";
  const best = m.best ? m.best.step : null;
  const panels = [
    ["losses", m.train, ["loss_D", "loss_G"]],
    ["D accuracy and G fooling rate", m.train, ["d_acc_real", "d_acc_fake", "g_fool_rate"]],
  ];
  const fid = m.score_keys.filter((k) => k.startsWith("fid"));
  const kid = m.score_keys.filter((k) => k.startsWith("kid"));
  if (fid.length) panels.push(["FID (lower is better)", m.eval, fid]);
  if (kid.length) panels.push(["KID (lower is better)", m.eval, kid]);
  for (const [title, records, keys] of panels) {
    const chart = lineChart(title, seriesOf(records, keys), best, m.events);
    if (chart) box.appendChild(chart);
  }
  if (!box.children.length) box.textContent = "no metrics logged yet";
  const list = $("events");
  list.textContent = "";
  for (const ev of m.events) {
    const li = document.createElement("li");
    li.textContent = `step ${ev.step}: ${ev.problem}${ev.detail ? ` (${ev.detail})` : ""}` +
      `${ev.action ? ` → ${ev.action}` : ""}`;
    list.appendChild(li);
  }
  $("events-box").hidden = !m.events.length;
  const last = m.train.length ? m.train[m.train.length - 1].step : 0;
  const bestText = m.best ? ` · best ${m.best.metric} ${fmt(m.best.value, 2)} at step ${m.best.step}` : "";
  $("run-status").textContent =
    `step ${last}${bestText} · ${m.training ? "training: refreshing every few seconds" : "not training"}`;
}

function nearestGridIndex(step) {
  let best = 0;
  run.steps.forEach((s, i) => { if (Math.abs(s - step) < Math.abs(run.steps[best] - step)) best = i; });
  return best;
}

function showGrid() {
  const slider = $("grid-step");
  if (!run.steps.length) { $("grid-label").textContent = "no sample grids yet"; return; }
  const step = run.steps[Number(slider.value)];
  const best = run.metrics && run.metrics.best;
  const isBest = best && run.steps[nearestGridIndex(best.step)] === step;
  $("grid-label").textContent =
    `step ${step} (${Number(slider.value) + 1} of ${run.steps.length})${isBest ? " · best" : ""}`;
  const src = `/api/run/grid/${step}`;
  if ($("run-grid").getAttribute("src") !== src) $("run-grid").src = src;
  $("grid-best").hidden = !best;
}

async function refreshRun() {
  try {
    const [m, g] = await Promise.all([
      api("/api/run/metrics").then((r) => r.json()),
      api("/api/run/grids").then((r) => r.json()),
    ]);
    if (!m.available) {
      $("run-status").textContent = "(this checkpoint is not inside a run directory)";
      return;
    }
    run.metrics = m;
    drawCharts();
    const slider = $("grid-step");
    const atEnd = run.followLatest || Number(slider.value) >= run.steps.length - 1;
    run.steps = g.steps;
    slider.max = String(Math.max(0, run.steps.length - 1));
    if (atEnd) slider.value = slider.max;
    showGrid();
    if (m.training && !run.timer) run.timer = setInterval(refreshRun, REFRESH_MS);
    if (!m.training && run.timer) { clearInterval(run.timer); run.timer = null; }
  } catch (e) {
    showError(e.message);
  }
}

// ---------------------------------------------------------------- wiring

function showView(name) {
  document.querySelectorAll("#tabs button").forEach((b) => b.classList.toggle("active", b.dataset.view === name));
  document.querySelectorAll(".view").forEach((v) => { v.hidden = v.id !== `view-${name}`; });
  if (name === "run") refreshRun();
}

function describe(info) {
  const tone = info.channels === 1 ? "gray" : "RGB";
  const where = info.run ? ` · run ${info.run}` : "";
  return `${info.variant} · step ${info.step} · z_dim ${info.z_dim} · ${info.size}×${info.size} ${tone}` +
    `${info.ema ? " · EMA weights" : ""} · ${info.checkpoint}${where}`;
}

async function main() {
  document.querySelectorAll("#tabs button").forEach((b) => b.addEventListener("click", () => showView(b.dataset.view)));
  $("random").addEventListener("click", () => loadSeed(randomSeed()).catch((e) => showError(e.message)));
  $("reset").addEventListener("click", () => {
    state.z = state.seedZ.slice();
    state.alphas = state.directions.map(() => 0);
    state.truncation = 1;
    syncSliders();
    requestImage();
  });
  $("origin").addEventListener("click", () => {
    state.z = state.z.map(() => 0);
    state.alphas = state.directions.map(() => 0);
    syncSliders();
    requestImage();
  });
  $("truncation").addEventListener("input", () => {
    state.truncation = Number($("truncation").value);
    $("truncation-value").textContent = fmt(state.truncation);
    requestImage();
  });
  $("walk-form").addEventListener("submit", walk);
  $("grid-step").addEventListener("input", () => {
    run.followLatest = Number($("grid-step").value) === run.steps.length - 1;
    showGrid();
  });
  $("grid-best").addEventListener("click", () => {
    if (!run.metrics || !run.metrics.best) return;
    $("grid-step").value = String(nearestGridIndex(run.metrics.best.step));
    run.followLatest = false;
    showGrid();
  });

  try {
    const info = await (await api("/api/info")).json();
    state.info = info;
    $("model-info").textContent = describe(info);
    if (info.kind === "translation") {
      // Translation models have no latent to explore: only the upload view applies.
      document.querySelector('#tabs [data-view="translate"]').hidden = false;
      document.querySelectorAll('#tabs [data-view="explore"], #tabs [data-view="interpolate"]')
        .forEach((b) => { b.hidden = true; });
      showView("translate");
      setupTranslate(info);
      return;
    }
    setupClassPicker(info);
    buildSliders(info.z_dim);
    state.z = new Array(info.z_dim).fill(0);
    await loadSeed(0);
    const d = await (await api("/api/directions")).json();
    buildDirections(d.directions);
  } catch (e) {
    showError(e.message);
  }
}

main();
