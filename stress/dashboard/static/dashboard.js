// The stress dashboard page: state and updates pushed over Socket.IO, drawn as cards, tables and
// uPlot charts. Every string that comes from a run (run ids, devices, reasons) is set with
// textContent, never as HTML.
"use strict";

const KEPT = 300; // seconds of a live run kept and drawn (a finished run's are all drawn)
const CHART_HEIGHT = 220; // px of plot and axes (the legend adds its own height below)
const CLOCK_STEPS = [1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600]; // x tick spacings, s
const GRID = "#8883"; // translucent grey: as faint on a light page as on a dark one
// Line colours readable on either background; the targets a run aims at (offered, fleet) are
// dashed and listed last, so that uPlot draws them on top of the lines that cover them.
const COLOUR = { target: "#a371f7", main: "#2f81f7", acked: "#2da44e", failed: "#e5534b", high: "#db6d28" };
const TARGET = { stroke: COLOUR.target, dash: [6, 4], width: 2 };
const LATENCY_NAMES = { ack: "publish to ack", e2e: "end to end" };
const MS_DIGITS = 2; // on loopback a percentile can be a few hundredths of a millisecond

let seconds = [];
let run = null;
const charts = {}; // name -> {plot: uPlot, key: its lines' labels}
window.charts = charts; // for a look from the browser console, and for the browser tests

const $ = (id) => document.getElementById(id);
const isValue = (value) => value !== null && value !== undefined && !Number.isNaN(value);
const orNull = (value) => (isValue(value) ? value : null); // uPlot draws a gap for null only
const fmt = (value, digits = 0) =>
  isValue(value) ? Number(value).toLocaleString(undefined, { maximumFractionDigits: digits }) : "-";
// The page's own text colour, so the axes follow the light or dark scheme the page is shown in
const ink = () => getComputedStyle(document.body).color;

/** 2500 -> "2.5k": three significant digits at most, for axis ticks. */
function compact(value) {
  const size = Math.abs(value);
  const [scaled, suffix] = size >= 1e6 ? [value / 1e6, "M"] : size >= 1e3 ? [value / 1e3, "k"] : [value, ""];
  return String(Number(scaled.toPrecision(3))) + suffix;
}

/** Seconds since the run's start as "45 s", or as "m:ss" (also below a minute when `long`). */
function clock(t, long = t >= 60) {
  if (!long) return `${t} s`;
  return `${Math.floor(t / 60)}:${String(t % 60).padStart(2, "0")}`;
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

/** QoS 1: some second was acknowledged, or the finished run's summary says so. */
function acknowledged() {
  const summary = run && run.summary;
  return (summary && summary.qos >= 1) || seconds.some((s) => s.acked > 0);
}

/** Which latency the run measured: publish to ack when there are any, else end to end. */
function latencySource() {
  return seconds.some((s) => isValue(s.ack_p50_ms) || isValue(s.ack_p99_ms)) ? "ack" : "e2e";
}

// -- charts ---------------------------------------------------------------------------------

// Each line: its legend label, how to read it from a second, and how it is drawn
function rateLines(withAcks) {
  return [
    { label: "written", stroke: COLOUR.main, pick: (s) => s.sent },
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
    { label: "fleet", ...TARGET, pick: (s) => s.fleet },
  ];
}

/** uPlot's data: the seconds on x, then one array per line (null where a second has no value). */
function dataOf(lines, drawn) {
  return [drawn.map((s) => s.t), ...lines.map((line) => drawn.map((s) => orNull(line.pick(s))))];
}

function axis(extra) {
  return { stroke: ink, grid: { stroke: GRID }, ticks: { stroke: GRID }, ...extra };
}

function newPlot(box, lines, unit, data) {
  return new uPlot(
    {
      width: box.clientWidth || 320,
      height: CHART_HEIGHT,
      cursor: { drag: { x: false, y: false } }, // a zoom would be undone by the next second
      scales: {
        x: { time: false },
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
  charts[name] = { plot: newPlot($(`${name}-chart`), lines, unit, data), key };
}

function drawCharts(source) {
  drawChart("rate", rateLines(acknowledged()), "msg/s");
  drawChart("latency", latencyLines(source), "ms");
  drawChart("connected", connectedLines(), "devices");
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

function showCards(last, source) {
  $("offered").textContent = fmt(last.offered);
  $("written").textContent = fmt(last.sent);
  $("acked-card").hidden = !acknowledged();
  $("acked").textContent = fmt(last.acked);
  $("connected").textContent = `${fmt(last.connected)} / ${fmt(last.fleet)}`;
  $("failed").textContent = fmt(last.failed);
  $("latency-label").textContent = `${LATENCY_NAMES[source]} p50 / p99 (ms)`;
  const [p50, p99] = [last[`${source}_p50_ms`], last[`${source}_p99_ms`]];
  $("latency").textContent = `${fmt(p50, MS_DIGITS)} / ${fmt(p99, MS_DIGITS)}`;
  $("generator").textContent = `${fmt(last.cpu_percent, 1)} % / ${fmt(last.loop_lag_ms, MS_DIGITS)} ms`;
}

function draw() {
  const last = seconds[seconds.length - 1] || {};
  const source = latencySource();
  showCards(last, source);
  rows("errors", last.errors || [], (e) => [e[0], e[1], fmt(e[2])]);
  rows("slowest", last.slowest || [], (s) => [s[1], fmt(s[0], 1)]);
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
  const live = state.live;
  run = state.run;
  $("run").textContent = run ? run.run_id + (run.folder ? "  (" + run.folder + ")" : "") : "no run yet";
  setStatus(live ? "live" : "last", live ? "live" : run ? "last run" : "waiting for a run");
  seconds = live ? (state.seconds || []).slice(-KEPT) : state.seconds || [];
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
  draw();
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
  send({ op: "rate", interval: Number.parseFloat($("interval").value) });
});
$("stop").addEventListener("click", () => send({ op: "stop" }));
