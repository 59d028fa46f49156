// Tally's browser UI: a live chart from /api/aggregate (drawn by chart.js) and the matching raw events
// from /api/filtered_events. Plain JS and uPlot (vendored from npm), no build step.
"use strict";

const $ = (id) => document.getElementById(id);
const RANGES = { "15m": 15 * 60e3, "1h": 3600e3, "24h": 24 * 3600e3, "7d": 7 * 24 * 3600e3 };
const MAX_EVENT_TYPES = 100;
const PAGE_SIZE = 50; // events a page of the table
let cursors = [null]; // cursor stack for event paging: cursors[i] fetches page i
let page = 0;
// Requests overlap (live refresh, user changes): an answer older than the one on screen is dropped,
// or a slow answer to an old query would overwrite the current one. (Dropping every answer but the
// newest request's would draw nothing at all when answers take longer than the refresh period.)
const issued = { chart: 0, events: 0 };
const onScreen = { chart: 0, events: 0 };

function range() {
  if ($("range").value === "custom" && $("from").value && $("to").value) {
    return [new Date($("from").value + "Z"), new Date($("to").value + "Z")];
  }
  const to = new Date(Math.ceil(Date.now() / 60e3) * 60e3);
  return [new Date(to - (RANGES[$("range").value] || RANGES["1h"])), to];
}

function selectedTypes() {
  return [...$("types").selectedOptions].map((o) => o.value);
}

function showError(msg) {
  $("error").hidden = !msg;
  $("error").textContent = msg || "";
}

async function getJSON(path, params) {
  const r = await apiFetch(path + "?" + params.toString());
  const body = await r.json();
  if (!r.ok) throw new Error(body.detail || r.statusText);
  return body;
}

async function loadTypes() {
  const to = new Date();
  const from = new Date(to - 7 * 24 * 3600e3);
  const p = new URLSearchParams({ from: from.toISOString(), to: to.toISOString(), granularity: "1d", group_by: "event_type", format: "columns" });
  const body = await getJSON("/api/aggregate", p);
  const known = body.series.map((s) => s.group.event_type);
  const chosen = new Set(selectedTypes());
  $("types").replaceChildren(...known.map((t) => new Option(t, t, false, chosen.has(t))));
  narrowTypes();
}

// The type picker's filter box hides the options that do not contain what is typed (case-insensitive).
function narrowTypes() {
  const typed = $("typefilter").value.trim().toLowerCase();
  const options = [...$("types").options];
  let count = 0;
  for (const o of options) {
    o.hidden = typed !== "" && !o.value.toLowerCase().includes(typed);
    if (!o.hidden) count += 1;
  }
  const total = options.length.toLocaleString();
  const listed = typed ? `${count.toLocaleString()} of ${total} shown` : `${total} types`;
  $("typecount").textContent = `${listed} · ${$("types").selectedOptions.length.toLocaleString()} selected`;
}

// A plain click (or arrow key) in a list selects that option alone, which would also drop the chosen
// types the filter hides, out of the user's sight: those keep the state they had before the change.
let chosenTypes = new Set();
function keepHiddenChoices() {
  for (const o of $("types").options) {
    if (o.hidden) o.selected = chosenTypes.has(o.value);
  }
  chosenTypes = new Set(selectedTypes());
  narrowTypes();
}

// Named metrics (defined by analysts in dbt_project/, GET /api/metrics) after the built-in ones, by label.
async function loadMetrics() {
  const r = await apiFetch("/api/metrics");
  if (!r.ok) return;
  const body = await r.json();
  const chosen = $("metric").value;
  const group = document.createElement("optgroup");
  group.label = "Named metrics";
  group.id = "named-metrics";
  for (const m of body.metrics) {
    // A sum of rows is 0 over a bucket without rows; a min, max, ratio or expression has no value there.
    if (m.type === "simple" && m.measure?.agg === "sum") ZERO_WHEN_EMPTY.add(m.name);
    const o = new Option(m.label, m.name, false, m.name === chosen);
    o.title = m.description || "";
    group.appendChild(o);
  }
  const old = $("named-metrics");
  if (old) old.replaceWith(group); else if (group.children.length) $("metric").appendChild(group);
}

async function refreshChart() {
  const [from, to] = range();
  const metric = $("metric").value;
  // The axis is named after the metric asked for, not the one selected when the answer arrives: an
  // answer to an earlier choice would otherwise be drawn under the new metric's name.
  const label = $("metric").selectedOptions[0]?.text || metric;
  // Columns: a quarter of the bytes of point objects, and the arrays uPlot draws from.
  const p = new URLSearchParams({ from: from.toISOString(), to: to.toISOString(), metrics: metric, format: "columns" });
  if ($("granularity").value) p.set("granularity", $("granularity").value);
  if ($("group").value) p.set("group_by", $("group").value);
  selectedTypes().forEach((t) => p.append("event_type", t));
  const seq = ++issued.chart;
  const body = await getJSON("/api/aggregate", p);
  if (seq < onScreen.chart) return;
  onScreen.chart = seq;
  $("asof").textContent = `granularity ${body.granularity} · data as of ${body.as_of ? new Date(body.as_of).toLocaleTimeString() : "-"}`;
  draw(body, metric, label, from, to);
}

async function refreshEvents() {
  // Nothing chosen: the types the filter shows, as many as /api/filtered_events takes in one request
  // (tally.api.params.MAX_FILTER_VALUES); with thousands of types, all of them would be refused.
  const visible = [...$("types").options].filter((o) => !o.hidden).map((o) => o.value);
  const types = selectedTypes().length ? selectedTypes() : visible.slice(0, MAX_EVENT_TYPES);
  const tbody = $("events").tBodies[0];
  if (!types.length) {
    tbody.replaceChildren();
    $("evinfo").textContent = "(no event types yet)";
    return;
  }
  let [from, to] = range();
  if (to - from > 31 * 24 * 3600e3) from = new Date(to - 31 * 24 * 3600e3);
  const p = new URLSearchParams({ from: from.toISOString(), to: to.toISOString(), limit: String(PAGE_SIZE) });
  types.forEach((t) => p.append("event_type", t));
  if ($("fsource").value) p.set("source", $("fsource").value);
  if ($("fuser").value) p.set("user_id", $("fuser").value);
  const attr = $("fattr").value.split("=");
  if (attr.length === 2 && attr[0]) p.set("attr." + attr[0].trim(), attr[1].trim());
  if (cursors[page]) p.set("cursor", cursors[page]);
  const seq = ++issued.events;
  let body = await getJSON("/api/filtered_events", p);
  const events = body.events;
  // A page cut short by the server's scan budget (busy stores, many types) goes on from its cursor,
  // a few times at most, so a user is not shown two events and a Next button for a page of 50.
  for (let more = 0; more < 4 && events.length < PAGE_SIZE && body.next_cursor; more++) {
    p.set("cursor", body.next_cursor);
    p.set("limit", String(PAGE_SIZE - events.length));
    body = await getJSON("/api/filtered_events", p);
    events.push(...body.events);
  }
  if (seq < onScreen.events) return;
  onScreen.events = seq;
  cursors[page + 1] = body.next_cursor;
  tbody.replaceChildren(...events.map(row));
  $("evinfo").textContent = `page ${page + 1}, ${events.length} events, newest first`;
  $("prev").disabled = page === 0;
  $("next").disabled = !body.next_cursor;
}

function row(e) {
  const tr = document.createElement("tr");
  const cells = [e.timestamp, e.event_type, e.source ?? "unknown", e.user_id ?? "", e.value ?? "", JSON.stringify(e.attributes ?? {}), e.event_id];
  cells.forEach((c, i) => {
    const td = document.createElement("td");
    td.textContent = c;
    if (i === 5) td.className = "attrs";
    tr.appendChild(td);
  });
  return tr;
}

async function refreshAll(resetPaging) {
  if (resetPaging) { cursors = [null]; page = 0; }
  try {
    await refreshChart();
    await refreshEvents();
    showError(null);
  } catch (err) {
    showError(err.message);
  }
}

$("typefilter").addEventListener("input", narrowTypes);
// Listeners on the list run before the form's (the change bubbles), so the chart asks for the kept choices.
$("types").addEventListener("change", keepHiddenChoices);
$("controls").addEventListener("submit", (ev) => ev.preventDefault());
$("controls").addEventListener("change", (ev) => {
  if (ev.target.id === "typefilter") return; // narrowing the list chooses nothing
  $("custom").hidden = $("range").value !== "custom";
  refreshAll(ev.target.id !== "live");
});
$("evfilters").addEventListener("submit", (ev) => { ev.preventDefault(); cursors = [null]; page = 0; refreshEvents().catch((e) => showError(e.message)); });
$("next").addEventListener("click", () => { page += 1; refreshEvents().catch((e) => showError(e.message)); });
$("prev").addEventListener("click", () => { page = Math.max(0, page - 1); refreshEvents().catch((e) => showError(e.message)); });

// Live: the chart follows new data every 2 s (the dataflow writes open buckets at least that often);
// the events table refreshes only on the first page, so paging is not disturbed. A tick is skipped
// while the last one is still waiting: when the stores answer slower than 2 s (a scan over a hundred
// types takes seconds on a busy box), refreshes would otherwise pile up and slow every answer more.
let refreshing = false;
setInterval(() => {
  if (refreshing || !$("live").checked || $("range").value === "custom") return;
  refreshing = true;
  // A success clears the banner: an error of an earlier answer (a request that failed, or one that
  // came back late) would otherwise stay over a chart that is working again.
  refreshChart().then(() => (page === 0 ? refreshEvents() : null)).then(() => showError(null))
    .catch((e) => showError(e.message)).finally(() => { refreshing = false; });
}, 2000);

// The first load counts as a refresh in flight: live ticks wait for it.
refreshing = true;
Promise.all([loadTypes(), loadMetrics().catch(() => {})]).then(() => refreshAll(true)).catch((e) => showError(e.message))
  .finally(() => { refreshing = false; });
setInterval(() => { loadTypes().catch(() => {}); loadMetrics().catch(() => {}); }, 30000);
