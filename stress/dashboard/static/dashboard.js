// The stress dashboard page: state and updates pushed over Socket.IO, drawn as text and SVG.
// Every name that comes from a run (devices, reasons) is set with textContent, never as HTML.
"use strict";

const KEPT = 300; // seconds drawn
let seconds = [];
let live = false;

const $ = (id) => document.getElementById(id);
const fmt = (value, digits = 0) =>
  value === null || value === undefined || Number.isNaN(value) ? "-" : Number(value).toLocaleString(undefined, { maximumFractionDigits: digits });

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

function line(svg, values, max, color) {
  const n = values.length;
  if (n < 2 || !(max > 0)) return;
  const points = values
    .map((v, i) => (v === null || v === undefined ? null : `${(i / (n - 1)) * 600},${140 - (v / max) * 130}`))
    .filter((p) => p !== null)
    .join(" ");
  const path = document.createElementNS("http://www.w3.org/2000/svg", "polyline");
  path.setAttribute("points", points);
  path.setAttribute("fill", "none");
  path.setAttribute("stroke", color);
  path.setAttribute("stroke-width", "1.5");
  path.setAttribute("vector-effect", "non-scaling-stroke");
  svg.append(path);
}

function draw() {
  const last = seconds[seconds.length - 1];
  if (last) {
    const lat = last.ack && last.ack.p50 !== null && last.ack.p50 !== undefined ? last.ack : last.e2e || {};
    $("offered").textContent = fmt(last.offered);
    $("delivered").textContent = fmt(last.acked || last.sent);
    $("connected").textContent = fmt(last.connected) + (last.fleet ? " / " + fmt(last.fleet) : "");
    $("failed").textContent = fmt(last.failed);
    $("latency").textContent = fmt(lat.p50, 1) + " / " + fmt(lat.p99, 1);
    $("latency-label").textContent = (lat === last.ack ? "publish to ack" : "publish to delivery") + " p50 / p99 (ms)";
    $("generator").textContent = fmt((last.cpu || 0) * 100) + " % / " + fmt(last.lag && last.lag.p99, 1) + " ms";
    rows("errors", last.errors || [], (e) => [e[0], e[1], fmt(e[2])]);
    rows("slowest", last.slowest || [], (s) => [s[1], fmt(s[0], 1)]);
  }
  const shown = seconds.slice(-KEPT);
  const rate = $("rate-chart");
  rate.replaceChildren();
  const offered = shown.map((s) => s.offered);
  const delivered = shown.map((s) => s.acked || s.sent);
  const failed = shown.map((s) => s.failed);
  const top = Math.max(1, ...offered, ...delivered, ...failed);
  line(rate, offered, top, "currentColor");
  line(rate, delivered, top, "#1a7f37");
  line(rate, failed, top, "#cf222e");
  const span = shown.length ? `last ${shown.length} s` : "";
  $("rate-scale").textContent = shown.length ? `top ${fmt(top)} msg/s, ${span}` : "";
  const latency = $("latency-chart");
  latency.replaceChildren();
  const pick = (s) => (s.ack && s.ack.p99 !== null && s.ack.p99 !== undefined ? s.ack : s.e2e || {});
  const p50 = shown.map((s) => pick(s).p50);
  const p99 = shown.map((s) => pick(s).p99);
  const high = Math.max(1, ...p99.filter((v) => v !== null && v !== undefined));
  line(latency, p50, high, "currentColor");
  line(latency, p99, high, "#cf222e");
  $("latency-scale").textContent = shown.length ? `top ${fmt(high, 1)} ms, ${span}` : "";
}

function showWorkers(workers) {
  $("workers-section").hidden = !(workers && workers.length);
  rows("workers", workers || [], (w) => [
    w.worker, fmt(w.sent), fmt(w.connected), fmt(w.errors), fmt((w.cpu || 0) * 100), fmt(w.lag, 1),
    w.lost ? "lost" : "ok",
  ]);
}

function showRun(state) {
  live = state.live;
  const run = state.run;
  $("run").textContent = run ? run.run_id + (run.folder ? "  (" + run.folder + ")" : "") : "no run yet";
  setStatus(live ? "live" : "last", live ? "live" : run ? "last run" : "waiting for a run");
  seconds = state.seconds || [];
  rows("failing", state.failing || [], (f) => [f.device, fmt(f.errors), f.reason]);
  showWorkers(state.workers);
  draw();
}

const socket = io();
socket.on("connect", () => setStatus(live ? "live" : "last", live ? "live" : "connected"));
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
