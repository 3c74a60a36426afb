// One device: a live chart per numeric attribute with its history, recent values of text ones.
//
// The attributes come from the device's live snapshot ({scope: "device"}); history from
// GET /api/history, downsampled by the server to a few hundred buckets (avg, with min and max
// as thin lines). With a relative range ("last 1 h") live values are appended and the window
// slides; a custom from/to range is static. Names are written with textContent only.
import { deleteJSON, getJSON, removes, sendJSON } from "./lib/api.js";
import { trackAlarmBadge } from "./lib/alarm-badge.js";
import { ago, bodyNumber, el, formatTime, insertSorted, isValue, setTime, showValue } from "./lib/dom.js";
import { decimalsOf, gapFor, withGaps } from "./lib/chart-data.js";
import { connectLive } from "./lib/live.js";
import { PRESENCE_ATTR, standing } from "./lib/presence.js";

const ROOM = document.body.dataset.room;
const DEVICE = document.body.dataset.device;
const offlineAfterMs = bodyNumber("offlineAfterS", 60) * 1000;
const TARGET_POINTS = 300;
const BUCKETS_S = [1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200, 10800, 21600, 43200, 86400];
const TABLE_ROWS = 500;
const CSV_ROWS = 100000; // the most /api/history answers at once
const RECENT_TEXT = 50;

const attributesEl = document.getElementById("attributes");
const emptyEl = document.getElementById("empty");
const headEl = document.getElementById("device");
const badgeEl = headEl.querySelector(".badge.offline");
const stoppedEl = headEl.querySelector(".badge.stopped");
const seenEl = document.getElementById("seen");
const rangeForm = document.getElementById("range");
const customEl = document.getElementById("custom");
const noteEl = document.getElementById("range-note");

const commandForm = document.getElementById("command");
const commandAttrs = document.getElementById("command-attrs");
const commandNote = document.getElementById("command-note");

const panels = new Map(); // attr -> panel
let lastTs = -Infinity;
let presence = null; // the newest "$state" value (lib/presence.js)
let range = { live: true, spanS: 3600 };

/** Bucket width (s) so that `spanS` holds about TARGET_POINTS buckets. */
function bucketFor(spanS) {
  const target = spanS / TARGET_POINTS;
  return BUCKETS_S.find(function (step) { return step >= target; }) || BUCKETS_S[BUCKETS_S.length - 1];
}

function currentSpan() {
  if (range.live) {
    const to = Date.now();
    return { from: to - range.spanS * 1000, to: to };
  }
  return { from: range.from, to: range.to };
}

// -- panels ------------------------------------------------------------------------------

function numberPanel(attr) {
  const chartEl = el("div", { className: "chart", role: "img", "aria-label": "Chart of " + attr + " over the chosen time range" });
  const tbody = el("tbody");
  const countEl = el("span", { className: "count-text", text: "" });
  const headers = ["Average", "Min", "Max"].map(function (name) { return el("th", { scope: "col", text: name }); });
  const table = el("details", { className: "history" },
    el("summary", null, "History table ", countEl),
    el("table", { className: "history" },
      el("thead", null, el("tr", null, el("th", { scope: "col", text: "Time" }), ...headers)),
      tbody));
  return { kind: "number", chartEl: chartEl, tbody: tbody, countEl: countEl, headers: headers,
    body: [chartEl, table], data: [[], [], [], []], chart: null, gapS: Infinity };
}

function textPanel() {
  const list = el("ol", { className: "recent", reversed: "" });
  return { kind: "text", list: list, body: [el("h4", { text: "Recent values" }), list] };
}

/** The raw values of `attr` in the time range shown, as a CSV download (GET /api/history). */
function csvUrl(attr) {
  const span = currentSpan();
  const query = new URLSearchParams({ room: ROOM, device: DEVICE, attr: attr, from: String(Math.floor(span.from)),
    to: String(Math.ceil(span.to)), format: "csv", limit: String(CSV_ROWS) });
  return "/api/history?" + query.toString();
}

function panelFor(item) {
  let panel = panels.get(item.attr);
  if (panel !== undefined) {
    return panel;
  }
  panel = typeof item.value === "number" ? numberPanel(item.attr) : textPanel();
  panel.attr = item.attr;
  panel.valueEl = el("span", { className: "value" });
  panel.unitEl = el("span", { className: "unit" });
  panel.unit = null;
  panel.decimals = 0; // the most decimals seen in its raw values: averages are shown with as many
  panel.tsEl = el("time", { className: "ts" });
  panel.statusEl = el("p", { className: "panel-status", role: "status" });
  panel.generation = 0;
  panel.ts = -Infinity;
  const download = el("a", { className: "download", text: "CSV", href: "#",
    "aria-label": "Download the values of " + item.attr + " in the time range as CSV" });
  download.addEventListener("click", function () {
    download.href = csvUrl(item.attr); // the range as it is at the click
  });
  panel.section = el("section", { className: "attr-panel", data: { attr: item.attr, kind: panel.kind },
    "aria-label": "Attribute " + item.attr },
  el("header", null, el("h3", { text: item.attr }), panel.valueEl, panel.unitEl, panel.tsEl, download),
  panel.statusEl, ...panel.body);
  insertSorted(attributesEl, panel.section, item.attr);
  panels.set(item.attr, panel);
  commandAttrs.append(el("option", { value: item.attr }));
  emptyEl.hidden = true;
  loadHistory(panel);
  return panel;
}

// -- charts ------------------------------------------------------------------------------

function chartWidth(panel) {
  return Math.max(240, panel.chartEl.clientWidth || attributesEl.clientWidth || 320);
}

/** A value of the panel as shown: rounded to the attribute's own precision, with its unit. */
function shown(panel, value) {
  if (value === null || value === undefined) {
    return "--";
  }
  const text = typeof value === "number" ? value.toFixed(panel.decimals) : String(value);
  return panel.unit ? text + " " + panel.unit : text;
}

/** The newest index that has a value (what the legend shows while the cursor is away). */
function lastIndex(panel) {
  const values = panel.data[1];
  for (let i = values.length - 1; i >= 0; i -= 1) {
    if (values[i] !== null) {
      return i;
    }
  }
  return null;
}

function drawChart(panel) {
  const span = currentSpan();
  if (panel.chart === null) {
    const format = function (_u, value) { return shown(panel, value); };
    panel.chart = new window.uPlot({
      width: chartWidth(panel),
      height: 220,
      scales: { x: { time: true, range: function () { const w = currentSpan(); return [w.from / 1000, w.to / 1000]; } } },
      axes: [{}, { values: function (_u, ticks) { return ticks.map(function (tick) { return tick.toFixed(panel.decimals); }); },
        label: panel.unit || "", size: 60 }],
      series: [
        { value: function (_u, ts) { return ts === null || ts === undefined ? "--" : formatTime(ts * 1000); } },
        { label: panel.attr, stroke: "#1f6feb", width: 2, spanGaps: false, value: format },
        { label: "min", stroke: "#9db7e0", width: 1, dash: [4, 4], spanGaps: false, value: format },
        { label: "max", stroke: "#9db7e0", width: 1, dash: [4, 4], spanGaps: false, value: format },
      ],
      legend: { live: true },
      hooks: {
        setCursor: [function (u) {
          if (u.cursor.idx === null || u.cursor.idx === undefined) {
            u.setLegend({ idx: lastIndex(panel) }, false); // the newest values while the cursor is away
          }
        }],
      },
    }, panel.data, panel.chartEl);
    panel.chart.setLegend({ idx: lastIndex(panel) }, false);
  } else {
    panel.chart.setData(panel.data);
    if (panel.chart.cursor.idx === null || panel.chart.cursor.idx === undefined) {
      panel.chart.setLegend({ idx: lastIndex(panel) }, false);
    }
  }
  panel.chart.setScale("x", { min: span.from / 1000, max: span.to / 1000 });
}

function tableRow(panel, tsMs, avg, min, max) {
  const timeEl = el("time");
  setTime(timeEl, tsMs);
  const cell = function (value) {
    return el("td", { text: value === null || value === undefined ? "" : value.toFixed(panel.decimals) });
  };
  return el("tr", null, el("td", null, timeEl), cell(avg), cell(min), cell(max));
}

function fillTable(panel) {
  const [xs, avg, min, max] = panel.data;
  const rows = [];
  for (let i = xs.length - 1; i >= 0 && rows.length < TABLE_ROWS; i -= 1) {
    if (avg[i] !== null) {
      rows.push(tableRow(panel, xs[i] * 1000, avg[i], min[i], max[i]));
    }
  }
  panel.tbody.replaceChildren(...rows);
  const count = avg.filter(function (value) { return value !== null; }).length;
  panel.countEl.textContent = "(" + count + " points" + (count > TABLE_ROWS ? ", newest " + TABLE_ROWS + " shown" : "") + ")";
}

// -- history -----------------------------------------------------------------------------

/** The attribute's unit (from /api/history), beside its value, in its table and on its chart. */
function setUnit(panel, unit) {
  const text = typeof unit === "string" ? unit : null;
  if (text === panel.unit) {
    return;
  }
  panel.unit = text;
  panel.unitEl.textContent = text || "";
  if (panel.kind === "number") {
    ["Average", "Min", "Max"].forEach(function (name, i) {
      panel.headers[i].textContent = text ? name + " (" + text + ")" : name;
    });
    if (panel.chart !== null) {
      panel.chart.destroy(); // the axis label is set when a chart is made
      panel.chart = null;
    }
  }
}

async function loadHistory(panel) {
  const generation = ++panel.generation;
  const span = currentSpan();
  const base = { room: ROOM, device: DEVICE, attr: panel.attr, from: Math.round(span.from), to: Math.round(span.to) };
  panel.statusEl.textContent = "loading history";
  try {
    if (panel.kind === "number") {
      const bucket = bucketFor((span.to - span.from) / 1000);
      const [avg, min, max] = await Promise.all(["avg", "min", "max"].map(function (agg) {
        return getJSON("/api/history", Object.assign({ bucket: bucket, agg: agg }, base));
      }));
      if (generation !== panel.generation) {
        return;
      }
      const mins = new Map(min.points.map(function (p) { return [p.ts, p.value]; }));
      const maxs = new Map(max.points.map(function (p) { return [p.ts, p.value]; }));
      const points = avg.points.filter(function (p) { return typeof p.ts === "number"; });
      setUnit(panel, avg.unit);
      for (const p of min.points.concat(max.points)) {
        if (typeof p.value === "number") {
          panel.decimals = Math.max(panel.decimals, decimalsOf(p.value)); // min and max are raw values
        }
      }
      const columns = [
        points.map(function (p) { return p.ts / 1000; }),
        points.map(function (p) { return p.value; }),
        points.map(function (p) { return mins.has(p.ts) ? mins.get(p.ts) : null; }),
        points.map(function (p) { return maxs.has(p.ts) ? maxs.get(p.ts) : null; }),
      ];
      panel.gapS = gapFor(columns[0], bucket);
      panel.data = withGaps(columns, panel.gapS);
      drawChart(panel);
      fillTable(panel);
      panel.statusEl.textContent = points.length === 0 ? "no values in this time range"
        : points.length + " buckets of " + bucket + " s (average, min and max)";
    } else {
      const body = await getJSON("/api/history", base);
      if (generation !== panel.generation) {
        return;
      }
      setUnit(panel, body.unit);
      const points = body.points.slice(-RECENT_TEXT).reverse();
      panel.list.replaceChildren(...points.map(function (p) { return recentItem(p.ts, p.value); }));
      panel.statusEl.textContent = points.length === 0 ? "no values in this time range" : "";
    }
  } catch (error) {
    if (generation === panel.generation) {
      panel.statusEl.textContent = "history unavailable: " + error.message;
    }
  }
}

function recentItem(tsMs, value) {
  const timeEl = el("time");
  setTime(timeEl, tsMs);
  return el("li", null, el("span", { className: "text-value", text: String(value) }), " ", timeEl);
}

// -- live values -------------------------------------------------------------------------

function appendLive(panel, item) {
  if (panel.kind === "number" && typeof item.value === "number") {
    const [xs, avg, min, max] = panel.data;
    const x = item.ts / 1000;
    if (xs.length > 0 && x < xs[xs.length - 1]) {
      return; // an old timestamp: it is in the history, not at the live edge
    }
    if (xs.length > 0 && x - xs[xs.length - 1] > panel.gapS) {
      xs.push((x + xs[xs.length - 1]) / 2); // silence before it: a gap, not a line
      avg.push(null);
      min.push(null);
      max.push(null);
    }
    xs.push(x);
    avg.push(item.value);
    min.push(null);
    max.push(null);
    const cutoff = currentSpan().from / 1000;
    while (xs.length > 0 && xs[0] < cutoff) {
      for (const column of panel.data) {
        column.shift();
      }
    }
    drawChart(panel);
    panel.tbody.prepend(tableRow(panel, item.ts, item.value, null, null));
    while (panel.tbody.children.length > TABLE_ROWS) {
      panel.tbody.lastElementChild.remove();
    }
  } else if (panel.kind === "text") {
    panel.list.prepend(recentItem(item.ts, item.value));
    while (panel.list.children.length > RECENT_TEXT) {
      panel.list.lastElementChild.remove();
    }
  }
}

function apply(item, fromSnapshot) {
  if (!isValue(item) || item.room !== ROOM || item.device !== DEVICE) {
    return;
  }
  if (item.attr === PRESENCE_ATTR) {
    if (presence === null || item.ts >= presence.ts) {
      presence = item;
      refreshSeen(Date.now());
    }
    return;
  }
  const isNew = !panels.has(item.attr);
  const panel = panelFor(item);
  if (item.ts < panel.ts) {
    return;
  }
  const changed = item.ts > panel.ts;
  panel.ts = item.ts;
  if (typeof item.value === "number") {
    panel.decimals = Math.max(panel.decimals, decimalsOf(item.value));
  }
  showValue(panel.valueEl, item.value);
  setTime(panel.tsEl, item.ts);
  if (item.ts > lastTs) {
    lastTs = item.ts;
    refreshSeen(Date.now());
  }
  // A new panel loads its history (which holds this value); a snapshot repeats known values.
  if (range.live && changed && !isNew && !fromSnapshot) {
    appendLive(panel, item);
  }
}

function refreshSeen(now) {
  const state = standing(lastTs, presence, now, offlineAfterMs);
  badgeEl.hidden = state !== "offline";
  stoppedEl.hidden = state !== "stopped";
  headEl.dataset.offline = String(state === "offline");
  headEl.dataset.presence = state;
  if (lastTs === -Infinity) {
    return;
  }
  seenEl.textContent = "last seen " + ago(lastTs, now);
  seenEl.title = new Date(lastTs).toISOString();
}

// -- range picker ------------------------------------------------------------------------

function localInputValue(ms) {
  const date = new Date(ms - new Date(ms).getTimezoneOffset() * 60000);
  return date.toISOString().slice(0, 19);
}

function reloadAll() {
  for (const panel of panels.values()) {
    loadHistory(panel);
  }
}

rangeForm.addEventListener("change", function (event) {
  if (event.target.name !== "range") {
    return;
  }
  const choice = event.target.value;
  customEl.hidden = choice !== "custom";
  noteEl.textContent = "";
  if (choice === "custom") {
    const span = currentSpan();
    document.getElementById("from").value = localInputValue(span.from);
    document.getElementById("to").value = localInputValue(span.to);
    return;
  }
  range = { live: true, spanS: Number(choice) };
  reloadAll();
});

rangeForm.addEventListener("submit", function (event) {
  event.preventDefault();
  const from = new Date(document.getElementById("from").value).getTime();
  const to = new Date(document.getElementById("to").value).getTime();
  if (!Number.isFinite(from) || !Number.isFinite(to) || from >= to) {
    noteEl.textContent = "Choose a start before the end.";
    return;
  }
  noteEl.textContent = "";
  range = { live: false, from: from, to: to };
  reloadAll();
});

window.addEventListener("resize", function () {
  for (const panel of panels.values()) {
    if (panel.chart) {
      panel.chart.setSize({ width: chartWidth(panel), height: 220 });
    }
  }
});

// -- commands ----------------------------------------------------------------------------

/** What the value box holds, as the API takes it: a number, true/false, or the text itself. */
function commandValue(text) {
  const trimmed = text.trim();
  if (trimmed === "true" || trimmed === "false") {
    return trimmed === "true";
  }
  const number = Number(trimmed);
  return trimmed !== "" && Number.isFinite(number) ? number : text;
}

commandForm.addEventListener("submit", async function (event) {
  event.preventDefault();
  const attr = commandForm.elements.attr.value.trim();
  const value = commandValue(commandForm.elements.value.value);
  commandNote.textContent = "sending...";
  try {
    const path = ["/api/devices", encodeURIComponent(ROOM), encodeURIComponent(DEVICE), "set",
      encodeURIComponent(attr)].join("/");
    const sent = await sendJSON(path, { value: value });
    commandNote.textContent = "sent " + sent.payload + " to " + sent.topic;
  } catch (error) {
    commandNote.textContent = "not sent: " + error.message;
  }
});

// -- removal -----------------------------------------------------------------------------

const removeButton = document.getElementById("remove");
const removedNote = document.getElementById("removed-note");
const overviewUrl = "/?q=" + encodeURIComponent(ROOM);

function showRemoved(text) {
  removedNote.replaceChildren(text + " ", el("a", { href: overviewUrl, text: "Back to the overview" }));
  removedNote.hidden = false;
  removeButton.disabled = true;
}

removeButton.addEventListener("click", async function () {
  const question = "Remove " + DEVICE + " of " + ROOM + " with all its values, history and alarms? " +
    "If it publishes again it comes back as a new device.";
  if (!window.confirm(question)) {
    return;
  }
  removeButton.disabled = true;
  try {
    await deleteJSON(["/api/devices", encodeURIComponent(ROOM), encodeURIComponent(DEVICE)].join("/"));
    window.location.assign(overviewUrl);
  } catch (error) {
    removeButton.disabled = false;
    removedNote.textContent = "not removed: " + error.message;
    removedNote.hidden = false;
  }
});

const live = connectLive([{ scope: "device", room: ROOM, device: DEVICE }]);
live.on("status", function (status) {
  const sendButton = commandForm.querySelector("button[type=submit]");
  sendButton.disabled = status.broker === "down";
  if (status.broker === "down") {
    commandNote.textContent = "commands cannot be sent: the portal is not connected to the broker";
  } else if (commandNote.textContent.startsWith("commands cannot be sent")) {
    commandNote.textContent = "";
  }
});
live.on("removed", function (selection) {
  if (removes(selection, ROOM, DEVICE)) {
    showRemoved("This device was removed, with its values and alarms.");
  }
});
live.on("snapshot", function (items) { items.forEach(function (item) { apply(item, true); }); });
live.on("values", function (items) { items.forEach(function (item) { apply(item, false); }); });
trackAlarmBadge(live);
window.setInterval(function () { refreshSeen(Date.now()); }, 1000);
window.setInterval(function () {
  if (range.live) {
    const span = currentSpan();
    for (const panel of panels.values()) {
      if (panel.chart) {
        panel.chart.setScale("x", { min: span.from / 1000, max: span.to / 1000 });
      }
    }
  }
}, 5000);
