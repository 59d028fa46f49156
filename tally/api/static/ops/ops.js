// The operations page: the panels of tally/ops/panels.py, read through /api/ops (the API asks
// Prometheus; the browser never does), redrawn every 5 s. Plain JS and the vendored uPlot.
"use strict";

const $ = (id) => document.getElementById(id);
const COLORS = ["#2563eb", "#dc2626", "#16a34a", "#d97706", "#7c3aed", "#0891b2", "#db2777", "#4b5563"];
const REFRESH_MS = 5000;
const plots = {};
const state = { panels: [], timer: null };

function fmt(value, unit) {
  if (value === null || value === undefined) return "–";
  const abs = Math.abs(value);
  if (abs < 1e-9) return { ops: "0/s", s: "0 s", bytes: "0 B", percentunit: "0 %" }[unit] || "0";
  if (unit === "short" && Number.isInteger(value)) return value.toLocaleString();
  if (unit === "s") {
    if (abs >= 86400) return `${(value / 86400).toFixed(abs >= 864000 ? 0 : 1)} d`;
    if (abs >= 3600) return `${(value / 3600).toFixed(1)} h`;
    if (abs >= 100) return `${Math.round(value / 60)} min`;
    return abs >= 1 ? `${value.toFixed(1)} s` : `${Math.round(value * 1000)} ms`;
  }
  if (unit === "bytes") {
    const units = ["B", "KiB", "MiB", "GiB", "TiB"];
    let i = 0, v = value;
    while (Math.abs(v) >= 1024 && i < units.length - 1) { v /= 1024; i++; }
    return `${v.toFixed(v >= 100 || i === 0 ? 0 : 1)} ${units[i]}`;
  }
  if (unit === "percentunit") return `${(value * 100).toFixed(1)} %`;
  const s = abs >= 1e6 ? `${(value / 1e6).toFixed(1)}M` : abs >= 1e4 ? `${(value / 1e3).toFixed(0)}k` : abs >= 100 ? value.toFixed(0) : value.toFixed(abs >= 1 ? 1 : 2);
  return unit === "ops" ? `${s}/s` : s;
}

function showError(msg) {
  $("error").hidden = !msg;
  $("error").textContent = msg || "";
}

async function getJSON(path) {
  const r = await apiFetch(path);
  const body = await r.json();
  if (!r.ok) throw new Error(body.detail || r.statusText);
  return body;
}

function card(panel) {
  const el = document.createElement("article");
  el.className = "panel";
  el.id = `panel-${panel.id}`;
  el.dataset.kind = panel.kind;
  const h = document.createElement("h3");
  h.textContent = panel.title;
  const p = document.createElement("p");
  p.className = "muted";
  p.textContent = panel.description;
  const body = document.createElement("div");
  body.className = "body";
  el.append(h, p, body);
  return el;
}

/** uPlot's data: the union of every series' times, each series' values aligned on it (null: none). */
function aligned(series) {
  const times = [...new Set(series.flatMap((s) => s.points.map((p) => p[0])))].sort((a, b) => a - b);
  const index = new Map(times.map((t, i) => [t, i]));
  const rows = series.map((s) => {
    const row = new Array(times.length).fill(null);
    for (const [t, v] of s.points) row[index.get(t)] = v;
    return row;
  });
  return [times, ...rows];
}

function drawChart(el, data) {
  const body = el.querySelector(".body");
  const id = data.panel.id;
  el.dataset.series = String(data.series.length);
  el.dataset.points = String(data.series.reduce((n, s) => n + s.points.length, 0));
  if (!data.series.length) {
    plots[id]?.destroy();
    delete plots[id];
    body.innerHTML = '<p class="empty">no data in this range</p>';
    return;
  }
  const unit = data.panel.unit;
  const names = data.series.map((s) => s.name).join("\n");
  if (plots[id] && plots[id].names === names) {
    plots[id].setData(aligned(data.series));
    return;
  }
  plots[id]?.destroy();
  body.innerHTML = "";
  const opts = {
    width: Math.max(320, body.clientWidth || 440),
    height: 200,
    series: [{}, ...data.series.map((s, i) => ({ label: s.name, stroke: COLORS[i % COLORS.length], width: 1.5, value: (u, v) => fmt(v, unit) }))],
    axes: [{}, { values: (u, ticks) => ticks.map((v) => fmt(v, unit)), size: 70 }],
    scales: { x: { time: true } },
  };
  plots[id] = new uPlot(opts, aligned(data.series), body);
  plots[id].names = names;
}

function drawStat(el, data) {
  const body = el.querySelector(".body");
  el.dataset.series = String(data.series.length);
  body.innerHTML = "";
  if (!data.series.length) {
    body.innerHTML = '<p class="empty">no data</p>';
    return;
  }
  for (const s of data.series) {
    const value = s.points.length ? s.points[s.points.length - 1][1] : null;
    const div = document.createElement("div");
    const big = document.createElement("div");
    big.className = "stat";
    big.textContent = fmt(value, data.panel.unit);
    const label = document.createElement("span");
    label.className = "muted";
    label.textContent = s.name;
    div.append(big, label);
    body.append(div);
  }
}

function drawAlerts(alerts) {
  const count = $("alertcount");
  count.textContent = String(alerts.length);
  count.classList.toggle("firing", alerts.length > 0);
  $("noalerts").hidden = alerts.length > 0;
  $("alerts").hidden = alerts.length === 0;
  const rows = alerts.map((a) => {
    const tr = document.createElement("tr");
    tr.className = a.severity;
    const where = Object.entries(a.labels).map(([k, v]) => `${k}=${v}`).join(" ");
    for (const text of [a.name, a.severity, where, a.since ? new Date(a.since).toLocaleTimeString() : "", a.summary]) {
      const td = document.createElement("td");
      td.textContent = text;
      tr.append(td);
    }
    tr.lastChild.className = "summary";
    return tr;
  });
  $("alerts").querySelector("tbody").replaceChildren(...rows);
}

async function refresh() {
  const minutes = $("minutes").value;
  const errors = [];
  const jobs = state.panels.map(async (panel) => {
    try {
      const data = await getJSON(`/api/ops/series?panel=${encodeURIComponent(panel.id)}&minutes=${minutes}`);
      const el = $(`panel-${panel.id}`);
      (panel.kind === "stat" ? drawStat : drawChart)(el, data);
    } catch (e) {
      errors.push(`${panel.title}: ${e.message}`);
    }
  });
  jobs.push(getJSON("/api/ops/alerts").then(drawAlerts, (e) => errors.push(`alerts: ${e.message}`)));
  await Promise.all(jobs);
  showError(errors.length ? errors[0] : "");
  $("asof").textContent = `as of ${new Date().toLocaleTimeString()}`;
  document.body.dataset.refreshed = String(Number(document.body.dataset.refreshed || 0) + 1);
}

async function start() {
  try {
    state.panels = await getJSON("/api/ops/panels");
  } catch (e) {
    showError(`cannot list the panels: ${e.message}`);
    return;
  }
  $("panels").replaceChildren(...state.panels.map(card));
  $("minutes").addEventListener("change", refresh);
  await refresh();
  state.timer = setInterval(refresh, REFRESH_MS);
}

start();
