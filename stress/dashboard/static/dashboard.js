// The stress dashboard page: state and updates pushed over Socket.IO, drawn as cards, tables and
// uPlot charts, with the changes of the run's timeline (stages, scale, rate, pauses, storms)
// marked across every chart. A live run shows its last seconds and can be steered; a finished
// one shows every second (bucketed when long), its whole-run figures, its errors and a link to
// its report, with the controls off. Every string that comes from a run (run ids, devices,
// reasons) is set with textContent, never as HTML.
"use strict";

const KEPT = 300; // seconds of a live run kept and drawn (a finished run's are all drawn)
const CHART_HEIGHT = 220; // px of plot and axes (the legend adds its own height below)
const CLOCK_STEPS = [1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200, 14400, 43200, 86400];
const GRID = "#8883"; // translucent grey: as faint on a light page as on a dark one
// Line colours readable on either background; the targets a run aims at (offered, devices
// asked) are dashed and listed last, so that uPlot draws them on top of the lines they cover.
const COLOUR = { target: "#a371f7", main: "#2f81f7", acked: "#2da44e", failed: "#e5534b", high: "#db6d28" };
const TARGET = { stroke: COLOUR.target, dash: [6, 4], width: 2 };
// A change of the timeline, a colour per kind (the words go along the top of the rate chart)
// (hues of their own: none is the colour of a line)
const MARK = {
  stage: "#8b949e", scale: "#1f9ece", rate: "#c93c9b", pause: "#bf8700", resume: "#0a8a6e",
  storm: "#953800", stop: "#6e7781",
};
const LATENCY_NAMES = { ack: "publish to ack", e2e: "end to end" };
const MS_DIGITS = 2; // on loopback a percentile can be a few hundredths of a millisecond

let seconds = [];
let run = null;
let live = false;
let changes = []; // the run's timeline: {t, what, text, devices, interval_s, ...}
let marks = []; // its changes after the start, drawn across the charts
let errors = new Map(); // "stage\u0000reason" -> [stage, reason, count], the whole run so far
const charts = {}; // name -> {plot: uPlot, key: its lines' labels, drawn: the marks drawn}
window.charts = charts; // for a look from the browser console, and for the browser tests
window.marks = () => marks;

const $ = (id) => document.getElementById(id);
const isValue = (value) => value !== null && value !== undefined && !Number.isNaN(value);
const orNull = (value) => (isValue(value) ? value : null); // uPlot draws a gap for null only
const fmt = (value, digits = 0) =>
  isValue(value) ? Number(value).toLocaleString(undefined, { maximumFractionDigits: digits }) : "-";
const percent = (part, whole) => (isValue(part) && whole ? ` (${fmt((100 * part) / whole, 1)} %)` : "");
// The page's own text colour, so the axes follow the light or dark scheme the page is shown in
const ink = () => getComputedStyle(document.body).color;

/** 2500 -> "2.5k": three significant digits at most, for axis ticks. */
function compact(value) {
  const size = Math.abs(value);
  const [scaled, suffix] = size >= 1e6 ? [value / 1e6, "M"] : size >= 1e3 ? [value / 1e3, "k"] : [value, ""];
  return String(Number(scaled.toPrecision(3))) + suffix;
}

/** Seconds since the run's start as "45 s", or as "m:ss" / "h:mm:ss" (also below when `long`). */
function clock(t, long = t >= 60) {
  t = Math.round(t);
  if (!long) return `${t} s`;
  const ss = String(t % 60).padStart(2, "0");
  if (t < 3600) return `${Math.floor(t / 60)}:${ss}`;
  return `${Math.floor(t / 3600)}:${String(Math.floor(t / 60) % 60).padStart(2, "0")}:${ss}`;
}

/** An interval as the cards say it. */
function every(interval) {
  if (!isValue(interval)) return "-";
  return interval === 0 ? "as fast as it takes" : `every ${fmt(interval, 3)} s`;
}

function setStatus(state, text) {
  $("status").dataset.state = state;
  $("status").textContent = text;
}

function rows(tbody, items, cells) {
  const body = $(tbody);
  body.replaceChildren();
  for (const item of items) {
    const tr = document.createElement("tr");
    for (const value of cells(item)) {
      const td = document.createElement("td");
      td.textContent = value;
      tr.append(td);
    }
    body.append(tr);
  }
}

// -- what the run is ------------------------------------------------------------------------

const summaryOf = () => (run && run.summary) || null;

/** QoS 1 or 2: some second was acknowledged, or the finished run's summary says so. */
function acknowledged() {
  const summary = summaryOf();
  return (summary && summary.qos >= 1) || seconds.some((s) => s.acked > 0);
}

/** Which latency the run measured: publish to ack when there are any, else end to end. */
function latencySource() {
  const summary = summaryOf();
  if (summary && summary.latency_ms && summary.latency_ms.ack && summary.latency_ms.ack.count) return "ack";
  return seconds.some((s) => isValue(s.ack_p50_ms) || isValue(s.ack_p99_ms)) ? "ack" : "e2e";
}

/** Errors counted in a second: its own list live, a count per second from a run folder. */
function errorsIn(second) {
  if (isValue(second.error_count)) return second.error_count;
  return (second.errors || []).reduce((sum, error) => sum + error[2], 0);
}

// -- charts ---------------------------------------------------------------------------------

// Each line: its legend label, how to read it from a second, and how it is drawn. Written is a
// wide pale band under acknowledged, so that both show where they are equal.
function rateLines(withAcks) {
  return [
    { label: "written", stroke: COLOUR.main + "99", width: 4, pick: (s) => s.sent },
    ...(withAcks ? [{ label: "acknowledged", stroke: COLOUR.acked, pick: (s) => s.acked }] : []),
    { label: "failed", stroke: COLOUR.failed, pick: (s) => s.failed },
    { label: "offered", ...TARGET, pick: (s) => s.offered },
  ];
}

function latencyLines(source) {
  return [
    { label: "p50", stroke: COLOUR.main, digits: MS_DIGITS, pick: (s) => s[`${source}_p50_ms`] },
    { label: "p99", stroke: COLOUR.high, digits: MS_DIGITS, pick: (s) => s[`${source}_p99_ms`] },
  ];
}

function connectedLines() {
  return [
    { label: "connected", stroke: COLOUR.main, pick: (s) => s.connected },
    { label: "devices asked", ...TARGET, pick: (s) => s.devices },
  ];
}

function errorLines() {
  return [{ label: "errors", stroke: COLOUR.failed, digits: 2, pick: errorsIn }];
}

/** uPlot's data: the seconds on x, then one array per line (null where a second has no value). */
function dataOf(lines, drawn) {
  return [drawn.map((s) => s.t), ...lines.map((line) => drawn.map((s) => orNull(line.pick(s))))];
}

function axis(extra) {
  return { stroke: ink, grid: { stroke: GRID }, ticks: { stroke: GRID }, ...extra };
}

/** The timeline's changes within the chart: a line across the plot each, in its kind's colour;
 * their words along the top of the rate chart, where there is room. */
function drawMarks(name) {
  return (u) => {
    const ctx = u.ctx;
    const box = u.bbox;
    const px = uPlot.pxRatio;
    const drawn = [];
    const free = [-Infinity, -Infinity, -Infinity]; // where each row of labels is free from
    ctx.save();
    ctx.font = `${11 * px}px system-ui, sans-serif`;
    ctx.textAlign = "left";
    for (const mark of marks) {
      if (!isValue(u.scales.x.min) || mark.t < u.scales.x.min || mark.t > u.scales.x.max) continue;
      const x = Math.round(u.valToPos(mark.t, "x", true));
      ctx.fillStyle = MARK[mark.what] || MARK.stage;
      ctx.fillRect(x - Math.round(px), box.top, 2 * Math.round(px), box.height); // whole pixels: crisp
      drawn.push({ t: mark.t, what: mark.what, x });
      // The words right of the line (left of it near the right edge), in the first row where
      // they overlap no other mark's; none when every row is taken there
      const width = ctx.measureText(mark.text).width;
      const left = x + 3 * px + width < box.left + box.width ? x + 3 * px : x - 3 * px - width;
      const row = free.findIndex((from) => left > from);
      if (name === "rate" && row >= 0 && left > box.left) {
        ctx.fillText(mark.text, left, box.top + (12 + 13 * row) * px);
        free[row] = left + width + 6 * px;
      }
    }
    ctx.restore();
    if (charts[name]) charts[name].drawn = drawn;
  };
}

function newPlot(name, lines, unit, data) {
  const box = $(`${name}-chart`);
  return new uPlot(
    {
      width: box.clientWidth || 320,
      height: CHART_HEIGHT,
      cursor: { drag: { x: false, y: false } }, // a zoom would be undone by the next second
      scales: {
        // The seconds drawn, and a change just after the last of them (a stop, in its drain)
        x: {
          time: false,
          range: (_u, min, max) => {
            if (!isValue(min) || !isValue(max)) return [0, 1];
            const end = Math.max(max, ...marks.filter((mark) => mark.t >= min).map((mark) => mark.t));
            return [min, end > min ? end : min + 1];
          },
        },
        y: { range: (_u, _min, max) => uPlot.rangeNum(0, Math.max(max || 0, 1), 0.1, true) },
      },
      axes: [
        axis({ incrs: CLOCK_STEPS, values: (u, ticks) => ticks.map((t) => clock(t, u.scales.x.max >= 60)) }),
        axis({ label: unit, size: 50, values: (_u, ticks) => ticks.map(compact) }),
      ],
      series: [
        { label: "time", value: (_u, t) => (isValue(t) ? clock(t) : "-") },
        ...lines.map((line) => ({
          label: line.label,
          stroke: line.stroke,
          width: line.width || 1.5,
          dash: line.dash,
          value: (_u, value) => fmt(value, line.digits),
        })),
      ],
      hooks: { draw: [drawMarks(name)] },
    },
    data,
    box,
  );
}

/** Draws `lines` in chart `name`: new data for the same lines, a new chart for other lines. */
function drawChart(name, lines, unit) {
  const key = lines.map((line) => line.label).join();
  const data = dataOf(lines, seconds);
  const chart = charts[name];
  if (chart && chart.key === key) {
    chart.plot.setData(data);
    return;
  }
  if (chart) chart.plot.destroy();
  charts[name] = { key, drawn: [] };
  charts[name].plot = newPlot(name, lines, unit, data);
}

function drawCharts(source) {
  drawChart("rate", rateLines(acknowledged()), "msg/s");
  drawChart("latency", latencyLines(source), "ms");
  drawChart("connected", connectedLines(), "devices");
  drawChart("errors", errorLines(), "errors/s");
  $("latency-title").textContent = `Latency, ${LATENCY_NAMES[source]} (ms)`;
}

const resized = new ResizeObserver((entries) => {
  for (const entry of entries) {
    const chart = charts[entry.target.dataset.chart];
    const width = Math.floor(entry.contentRect.width);
    if (chart && width > 0 && width !== chart.plot.width) chart.plot.setSize({ width, height: CHART_HEIGHT });
  }
});
document.querySelectorAll("[data-chart]").forEach((box) => resized.observe(box));

// The axes take the page's text colour when drawn: a change of scheme needs a redraw
window.matchMedia("(prefers-color-scheme: dark)").addEventListener("change", () => {
  for (const chart of Object.values(charts)) chart.plot.redraw(false);
});

// -- cards and tables -----------------------------------------------------------------------

function setCard(id, label, value) {
  $(`${id}-label`).textContent = label;
  $(id).textContent = value;
}

/** A live run: the newest second, and what was in force at its end. */
function showLiveCards(last, source) {
  setCard("offered", "offered / s", fmt(last.offered));
  setCard("written", "written / s", fmt(last.sent));
  setCard("acked", "acknowledged / s", fmt(last.acked));
  const sampled = seconds.some((s) => s.sampled > 0);
  $("observed-card").hidden = !sampled;
  setCard(
    "observed",
    "observed end to end / sampled (per s)",
    `${fmt(last.observed)} / ${fmt(last.sampled)}${percent(last.observed, last.sampled)}`,
  );
  setCard("connected", "connected / devices asked", `${fmt(last.connected)} / ${fmt(last.devices)}`);
  setCard("interval", "interval in force", every(last.interval_s));
  setCard("failed", "failed / s", fmt(last.failed));
  setCard("latency", `${LATENCY_NAMES[source]} p50 / p99 (ms)`,
    `${fmt(last[`${source}_p50_ms`], MS_DIGITS)} / ${fmt(last[`${source}_p99_ms`], MS_DIGITS)}`);
  setCard("generator", "generator CPU / loop lag",
    `${fmt(last.cpu_percent, 1)} % / ${fmt(last.loop_lag_ms, MS_DIGITS)} ms`);
  $("figures-of").textContent = isValue(last.t) ? `the second at ${clock(last.t)}` : "-";
}

/** A finished run: its whole-run figures, from its summary. */
function showRunCards(summary, source) {
  const duration = summary.duration_s || null;
  const perSecond = (count) => (isValue(count) && duration ? count / duration : null);
  setCard("offered", "offered / s (mean)", fmt(summary.offered_per_s, 1));
  setCard("written", "written / s (mean)", fmt(perSecond(summary.sent), 1));
  setCard("acked", "acknowledged / s (mean)", fmt(perSecond(summary.acked), 1));
  const observed = summary.observed;
  $("observed-card").hidden = !summary.sampled;
  setCard("observed", "observed end to end / sampled",
    `${fmt(observed)} / ${fmt(summary.sampled)}${percent(observed, summary.sampled)}`);
  setCard("connected", "connections peak / devices asked", `${fmt(summary.connections_peak)} / ${fmt(summary.devices)}`);
  setCard("interval", "interval at the end", every(summary.interval_s));
  setCard("failed", "failed (whole run)", fmt(summary.failed));
  const latency = (summary.latency_ms || {})[source] || {};
  setCard("latency", `${LATENCY_NAMES[source]} p50 / p99 (ms, whole run)`,
    `${fmt(latency.p50, MS_DIGITS)} / ${fmt(latency.p99, MS_DIGITS)}`);
  const generator = summary.generator || {};
  setCard("generator", "generator CPU / loop lag p99",
    `${fmt(generator.cpu_percent, 1)} % / ${fmt(generator.loop_lag_p99_ms, MS_DIGITS)} ms`);
  $("figures-of").textContent = `the whole run (${fmt(summary.duration_s, 1)} s of publishing)`;
}

function showErrors() {
  const ranked = [...errors.values()].sort((a, b) => b[2] - a[2]);
  rows("errors", ranked, (e) => [e[0] || "-", e[1], fmt(e[2])]);
  $("errors-total").textContent = fmt(ranked.reduce((sum, e) => sum + e[2], 0));
}

function showTimeline(timeline) {
  changes = timeline;
  marks = changes.filter((change) => change.what !== "start");
  rows("timeline", changes, (c) => [clock(c.t, true), c.text]);
}

function draw() {
  const last = seconds[seconds.length - 1] || {};
  const source = latencySource();
  $("acked-card").hidden = !acknowledged();
  const summary = summaryOf();
  if (!live && summary) showRunCards(summary, source);
  else showLiveCards(last, source);
  rows("slowest", last.slowest || [], (s) => [s[1], fmt(s[0], 1)]);
  showErrors();
  drawCharts(source);
}

function showWorkers(workers) {
  $("workers-section").hidden = !(workers && workers.length);
  rows("workers", workers || [], (w) => [
    w.worker, fmt(w.sent), fmt(w.connected), fmt(w.errors), fmt(w.cpu_percent, 1), fmt(w.loop_lag_ms, MS_DIGITS),
    w.lost ? "lost" : "ok",
  ]);
}

function showRun(state) {
  live = Boolean(state.live);
  run = state.run;
  $("run").textContent = run ? run.run_id + (run.folder ? "  (" + run.folder + ")" : "") : "no run yet";
  setStatus(live ? "live" : "last", live ? "live" : run ? "last run" : "waiting for a run");
  seconds = live ? (state.seconds || []).slice(-KEPT) : state.seconds || [];
  const finished = !live && run;
  errors = new Map();
  for (const [stage, reason, count] of (finished ? run.errors : state.errors) || []) {
    errors.set(`${stage}\u0000${reason}`, [stage, reason, count]);
  }
  showTimeline((finished ? run.timeline : state.timeline) || []);
  const problems = (finished && run.problems) || [];
  $("problems").hidden = !problems.length;
  $("problems").textContent = problems.join(" ");
  $("report-link").hidden = !(finished && run.report);
  if (finished && run.report) $("report-link").href = run.report;
  $("controls").disabled = !live;
  $("answer").textContent = live || !run ? "" : "The run is over: its controls are off.";
  const bucket = (finished && run.bucket_s) || 1;
  $("bucket").textContent = bucket > 1 ? `Each point covers ${bucket} s (the mean per second; latencies the highest).` : "";
  rows("failing", state.failing || [], (f) => [f.device, fmt(f.errors), f.reason]);
  showWorkers(state.workers);
  draw();
}

// -- updates and controls -------------------------------------------------------------------

const socket = io();
socket.on("disconnect", () => setStatus("disconnected", "dashboard disconnected"));
socket.on("state", showRun);
socket.on("started", showRun);
socket.on("ended", (state) => showRun({ ...state, live: false }));
socket.on("second", (second) => {
  seconds.push(second);
  if (seconds.length > KEPT) seconds.splice(0, seconds.length - KEPT);
  for (const [stage, reason, count] of second.errors || []) {
    const key = `${stage}\u0000${reason}`;
    const known = errors.get(key);
    errors.set(key, [stage, reason, (known ? known[2] : 0) + count]);
  }
  draw();
});
socket.on("change", (change) => {
  // One with the time and kind of the last replaces it: a storm told again with another
  // process's share
  const last = changes[changes.length - 1];
  const kept = last && last.t === change.t && last.what === change.what ? changes.slice(0, -1) : changes;
  showTimeline([...kept, change]);
  for (const chart of Object.values(charts)) chart.plot.redraw(false);
});
socket.on("workers", showWorkers);
socket.on("failing", (failing) => rows("failing", failing, (f) => [f.device, fmt(f.errors), f.reason]));

function send(request) {
  $("answer").textContent = "...";
  socket.emit("control", request, (answer) => {
    $("answer").textContent = answer.ok ? answer.message || "done" : "error: " + answer.error;
  });
}

const devices = () => $("devices").value.split(/[\s,]+/).filter(Boolean);
$("pause").addEventListener("click", () => send({ op: "pause", devices: devices() }));
$("resume").addEventListener("click", () => send({ op: "resume", devices: devices() }));
$("scale-form").addEventListener("submit", (e) => {
  e.preventDefault();
  send({ op: "scale", devices: Number.parseInt($("size").value, 10) });
});
$("rate-form").addEventListener("submit", (e) => {
  e.preventDefault();
  send({ op: "rate", interval: Number.parseFloat($("interval-input").value) });
});
$("stop").addEventListener("click", () => send({ op: "stop" }));
