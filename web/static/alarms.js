// The alarms page: GET /api/alarms, live "alarm" events, acknowledge and clear buttons, and
// an alarm's history (GET /api/alarms/<id>) under the table.
//
// Rows carry data-alarm-id and data-state; buttons call POST /api/alarms/<id>/ack|clear with the
// X-CSRF-Token header (lib/api.js). Names and values are written with textContent only.
import { getJSON, postJSON } from "./lib/api.js";
import { trackAlarmBadge } from "./lib/alarm-badge.js";
import { el, formatValue, setTime } from "./lib/dom.js";
import { connectLive } from "./lib/live.js";

const rowsEl = document.getElementById("alarm-rows");
const stateEl = document.getElementById("state");
const emptyEl = document.getElementById("empty");
const errorEl = document.getElementById("alarm-error");
const historyEl = document.getElementById("alarm-history");
const historyTitleEl = document.getElementById("history-title");
const historyEventsEl = document.getElementById("history-events");
const alarms = new Map(); // id -> alarm
let generation = 0;

function isAlarm(alarm) {
  return alarm !== null && typeof alarm === "object" &&
    (typeof alarm.id === "number" || typeof alarm.id === "string");
}

function wanted(alarm) {
  return stateEl.value === "all" || alarm.state === stateEl.value;
}

function showError(message) {
  errorEl.textContent = message;
  errorEl.hidden = message === "";
}

function timeCell(label, ms, extra) {
  const td = el("td", { data: { label: label } });
  if (typeof ms === "number") {
    const timeEl = el("time");
    setTime(timeEl, ms);
    td.append(timeEl);
    if (extra) {
      td.append(" ", el("span", { className: "by", text: extra }));
    }
  }
  return td;
}

function text(value) {
  if (value === null || value === undefined) {
    return "";
  }
  return typeof value === "object" ? JSON.stringify(value) : formatValue(value);
}

async function act(alarm, action, button) {
  button.disabled = true;
  try {
    const updated = await postJSON("/api/alarms/" + encodeURIComponent(alarm.id) + "/" + action);
    showError("");
    upsert(updated);
  } catch (error) {
    showError("Could not " + (action === "ack" ? "acknowledge" : "clear") + " the alarm: " + error.message);
    button.disabled = false;
  }
}

const HAPPENED = { raised: "raised", updated: "updated", acked: "acknowledged", cleared: "cleared" };
let historyOf = null; // the id whose history is shown

function historyItem(event) {
  const item = el("li", { data: { kind: String(event.kind) } });
  const timeEl = el("time");
  if (typeof event.at === "number") {
    setTime(timeEl, event.at);
  }
  const what = HAPPENED[event.kind] || text(event.kind);
  const by = event.actor ? " by " + String(event.actor) : " by the rule";
  item.append(timeEl, " ", el("span", { className: "kind", text: what + by }),
    ": ", el("span", { className: "severity", data: { severity: String(event.severity) }, text: text(event.severity) }),
    ", value ", el("span", { className: "value", text: text(event.value) }));
  return item;
}

async function showHistory(alarm) {
  historyOf = String(alarm.id);
  try {
    const body = await getJSON("/api/alarms/" + encodeURIComponent(alarm.id));
    if (historyOf !== String(alarm.id)) {
      return;
    }
    historyTitleEl.textContent = "History of " + text(alarm.type) + " on " + text(alarm.device) + " in " + text(alarm.room);
    historyEventsEl.replaceChildren(...(Array.isArray(body.events) ? body.events : []).map(historyItem));
    historyEl.hidden = false;
    showError("");
  } catch (error) {
    showError("Could not load the alarm's history: " + error.message);
  }
}

document.getElementById("history-close").addEventListener("click", function () {
  historyOf = null;
  historyEl.hidden = true;
});

function row(alarm) {
  const what = String(alarm.type) + " on " + String(alarm.device) + " in " + String(alarm.room);
  const ack = el("button", { type: "button", className: "ack", text: "Acknowledge", "aria-label": "Acknowledge " + what });
  const clear = el("button", { type: "button", className: "clear", text: "Clear", "aria-label": "Clear " + what });
  ack.disabled = Boolean(alarm.acked_at);
  clear.disabled = alarm.state === "cleared";
  const history = el("button", { type: "button", className: "show-history", text: "History", "aria-label": "History of " + what });
  history.addEventListener("click", function () { showHistory(alarm); });
  ack.addEventListener("click", function () { act(alarm, "ack", ack); });
  clear.addEventListener("click", function () { act(alarm, "clear", clear); });
  const severity = el("td", { data: { label: "Severity" } },
    el("span", { className: "severity", data: { severity: String(alarm.severity) }, text: text(alarm.severity) }));
  return el("tr", { data: { alarmId: String(alarm.id), state: String(alarm.state), acked: String(Boolean(alarm.acked_at)) } },
    severity,
    el("td", { className: "state", data: { label: "State" }, text: text(alarm.state) }),
    el("td", { data: { label: "Room" }, text: text(alarm.room) }),
    el("td", { data: { label: "Device" }, text: text(alarm.device) }),
    el("td", { className: "type", data: { label: "Type" }, text: text(alarm.type) }),
    el("td", { data: { label: "Value" }, text: text(alarm.value) }),
    timeCell("Raised", alarm.ts),
    timeCell("Acknowledged", alarm.acked_at, alarm.acked_by ? "by " + String(alarm.acked_by) : ""),
    el("td", { className: "actions", data: { label: "Actions" } }, ack, clear, history));
}

function sortKey(alarm) {
  return [typeof alarm.ts === "number" ? alarm.ts : 0, Number(alarm.id) || 0];
}

function render() {
  const shown = [...alarms.values()].filter(wanted);
  shown.sort(function (a, b) {
    const [ta, ia] = sortKey(a);
    const [tb, ib] = sortKey(b);
    return tb - ta || ib - ia;
  });
  rowsEl.replaceChildren(...shown.map(row));
  emptyEl.hidden = shown.length > 0;
}

// Events that arrive while the list is being fetched may be newer than the list: they are
// applied again on top of it, so a slow response never hides a just-raised alarm.
let sinceFetch = null;

function upsert(alarm) {
  if (!isAlarm(alarm)) {
    return;
  }
  alarms.set(String(alarm.id), alarm);
  if (historyOf === String(alarm.id)) {
    showHistory(alarm); // what just changed is now part of its history
  }
  if (sinceFetch !== null) {
    sinceFetch.push(alarm);
  }
  render();
}

async function reload() {
  const mine = ++generation;
  sinceFetch = [];
  try {
    const body = await getJSON("/api/alarms", { state: stateEl.value });
    if (mine !== generation) {
      return;
    }
    alarms.clear();
    for (const alarm of (body && Array.isArray(body.alarms)) ? body.alarms : []) {
      if (isAlarm(alarm)) {
        alarms.set(String(alarm.id), alarm);
      }
    }
    for (const alarm of sinceFetch || []) {
      alarms.set(String(alarm.id), alarm);
    }
    showError("");
    render();
  } catch (error) {
    showError("Alarms unavailable: " + error.message);
  } finally {
    if (mine === generation) {
      sinceFetch = null;
    }
  }
}

stateEl.addEventListener("change", reload);
const live = connectLive([]);
live.on("connect", reload);
live.on("alarm", upsert);
trackAlarmBadge(live);
