// The main chart: an /api/aggregate answer drawn with uPlot over every bucket of the range asked for.
// Loaded before app.js; `plot` is global so that tests can read what is drawn (plot.data, plot.series).
"use strict";

// Bucket widths of /api/aggregate's granularities (tally/storage/aggregates.py GRANULARITIES), in seconds.
const STEP_S = { "1m": 60, "5m": 300, "15m": 900, "1h": 3600, "1d": 86400 };
const COLORS = ["#2563eb", "#dc2626", "#16a34a", "#d97706", "#7c3aed", "#0891b2", "#db2777", "#4b5563"];
// Metrics whose bucket without events is truly 0: counts and sums. unique_users too, as the API itself
// answers 0 for a bucket that saw no user. Averages, min, max, ratios and derived metrics have no
// value over nothing, so their empty buckets stay gaps. app.js adds the named metrics that are sums.
const ZERO_WHEN_EMPTY = new Set(["count", "sum", "late_count", "unique_users"]);
let plot = null;

/** Starts (Unix s) of every bucket of [from, to): /api/aggregate leaves out buckets without rows,
 * and bins from the Unix epoch (date_bin in UTC), so the first bucket may start before `from`. */
function bucketStarts(from, to, granularity) {
  const step = STEP_S[granularity];
  if (!step) return [];
  const out = [];
  for (let t = Math.floor(from / 1000 / step) * step; t < to / 1000; t += step) out.push(t);
  return out;
}

/** uPlot's data: the bucket times, then one row of values per series. `body` is an answer in
 * format=columns (per series: `t` in Unix seconds, one array per metric). An empty bucket is 0 for a
 * metric in ZERO_WHEN_EMPTY, else null (no line is drawn across it). Buckets that have not started
 * yet are null for every metric: nothing has happened there, not zero. */
function chartData(body, metric, from, to) {
  const times = [...new Set([
    ...bucketStarts(from, to, body.granularity),
    // Kept whatever the grid: a point never disappears because it is off the expected bins.
    ...body.series.flatMap((s) => s.t),
  ])].sort((a, b) => a - b);
  const zero = ZERO_WHEN_EMPTY.has(metric);
  const now = Date.now() / 1000;
  // Without grouping an empty answer is still one series, "all", at zero: there was no traffic.
  const series = body.series.length || body.group_by.length ? body.series : [{ group: {}, t: [], [metric]: [] }];
  const rows = series.map((s) => {
    const values = s[metric];
    const at = new Map(s.t.map((t, i) => [t, values[i]]));
    // A sum over no values (events without `value`, a named metric whose filter kept no row) is 0 too.
    return times.map((t) => at.get(t) ?? (zero && t <= now ? 0 : null));
  });
  return { times, rows, labels: series.map((s) => Object.values(s.group).join(" / ") || "all") };
}

/** Points uPlot hides when lines are dense would leave a value between two gaps invisible: draw those. */
function isolatedPoints(u, i, show) {
  if (show) return null;
  const ys = u.data[i];
  const out = [];
  ys.forEach((y, j) => { if (y != null && ys[j - 1] == null && ys[j + 1] == null) out.push(j); });
  return out.length ? out : null;
}

/** Tick labels as short as exact allows: 5M, 1.25M, 0.5, never 1.3M for 1,250,000. */
function tickLabels(u, splits) {
  const exact = new Intl.NumberFormat(undefined, { notation: "compact", maximumFractionDigits: 6 });
  const want = splits.map((v) => exact.format(v));
  for (let digits = 0; digits < 6; digits++) {
    const f = new Intl.NumberFormat(undefined, { notation: "compact", maximumFractionDigits: digits });
    const out = splits.map((v) => f.format(v));
    if (out.every((s, i) => s === want[i])) return out;
  }
  return want;
}

/** The y axis as wide as its widest tick label, so the axis label (drawn outside it) never overlaps. */
function axisSize(u, values, axisIdx, cycleNum) {
  const axis = u.axes[axisIdx];
  // uPlot sizes axes in a few passes; after the first two it keeps the size it has, or it could oscillate.
  if (cycleNum > 1) return axis._size;
  let size = axis.ticks.size + axis.gap;
  const widest = (values || []).reduce((a, v) => (String(v).length > a.length ? String(v) : a), "");
  if (widest) {
    u.ctx.font = axis.font[0];
    size += u.ctx.measureText(widest).width / uPlot.pxRatio;
  }
  return Math.ceil(size) + 4;
}

function draw(body, metric, label, from, to) {
  const { times, rows, labels } = chartData(body, metric, from, to);
  const series = [{}, ...rows.map((_, i) => ({
    label: labels[i],
    stroke: COLORS[i % COLORS.length],
    width: 2,
    spanGaps: false,
    points: { show: times.length < 60, filter: isolatedPoints },
  }))];
  const opts = {
    width: Math.max(400, $("chart").clientWidth),
    height: 320,
    series,
    scales: { x: { time: true, min: from / 1000, max: to / 1000 } },
    axes: [{}, { label, size: axisSize, values: tickLabels }],
  };
  if (plot) plot.destroy();
  plot = new uPlot(opts, [times, ...rows], $("chart"));
}

window.addEventListener("resize", () => plot && plot.setSize({ width: $("chart").clientWidth, height: 320 }));
