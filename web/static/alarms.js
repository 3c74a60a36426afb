// The alarms page: GET /api/alarms a page at a time (newest first, PAGE_SIZE a page), filtered by
// state, severity, type, room and device; live "alarm" events; acknowledge and clear one alarm,
// the selected ones, or every alarm that matches the filters (POST /api/alarms/ack|clear); an
// alarm's history (GET /api/alarms/<id>) under the table. Columns sort the page shown.
//
// Rows carry data-alarm-id, data-state and data-acked. Names and values are written with
// textContent only.
import { getJSON, postJSON, sendJSON } from "./lib/api.js";
import { trackAlarmBadge } from "./lib/alarm-badge.js";
import { el, formatCount, formatValue, setTime } from "./lib/dom.js";
import { connectLive } from "./lib/live.js";

const PAGE_SIZE = 100;
const RANK = { critical: 4, major: 3, minor: 2, warning: 1 };

const rowsEl = document.getElementById("alarm-rows");
const filtersEl = document.getElementById("filters");
const stateEl = document.getElementById("state");
const emptyEl = document.getElementById("empty");
const errorEl = document.getElementById("alarm-error");
const countEl = document.getElementById("page-count");
const previousEl = document.getElementById("page-previous");
const nextEl = document.getElementById("page-next");
const selectPageEl = document.getElementById("select-page");
const bulkNoteEl = document.getElementById("bulk-note");
const ackSelectedEl = document.getElementById("ack-selected");
const clearSelectedEl = document.getElementById("clear-selected");
const ackMatchingEl = document.getElementById("ack-matching");
const clearMatchingEl = document.getElementById("clear-matching");
const historyEl = document.getElementById("alarm-history");
const historyTitleEl = document.getElementById("history-title");
const historyEventsEl = document.getElementById("history-events");

const alarms = new Map(); // id -> alarm, of the page shown
const selected = new Set(); // ids
const state = {
  cursors: [null], // the `before` of each page seen so far; the last one is the page shown
  next: null,
  total: 0,
  sort: { key: "raised", descending: true },
};
let generation = 0;

function isAlarm(alarm) {
  return alarm !== null && typeof alarm === "object" &&
    (typeof alarm.id === "number" || typeof alarm.id === "string");
}

/** The filters of the form, as the API takes them (empty ones left out). */
function filters() {
  const chosen = {};
  for (const name of ["state", "severity", "type", "room", "device"]) {
    const value = filtersEl.elements[name].value.trim();
    if (value !== "") {
      chosen[name] = value;
    }
  }
  return chosen;
}

function wanted(alarm) {
  const chosen = filters();
  return (chosen.state === "all" || chosen.state === undefined || alarm.state === chosen.state) &&
    (chosen.severity === undefined || alarm.severity === chosen.severity) &&
    (chosen.type === undefined || alarm.type === chosen.type) &&
    (chosen.room === undefined || alarm.room === chosen.room) &&
    (chosen.device === undefined || alarm.device === chosen.device);
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

// -- history ---------------------------------------------------------------------------------

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

// -- the table -------------------------------------------------------------------------------

function raisedAt(alarm) {
  return typeof alarm.raised_at === "number" ? alarm.raised_at : alarm.ts;
}

function row(alarm) {
  const id = String(alarm.id);
  const what = String(alarm.type) + " on " + String(alarm.device) + " in " + String(alarm.room);
  const pick = el("input", { type: "checkbox", className: "pick", "aria-label": "Select " + what });
  pick.checked = selected.has(id);
  pick.addEventListener("change", function () {
    if (pick.checked) {
      selected.add(id);
    } else {
      selected.delete(id);
    }
    showSelection();
  });
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
  return el("tr", { data: { alarmId: id, state: String(alarm.state), acked: String(Boolean(alarm.acked_at)) } },
    el("td", { className: "select" }, pick),
    severity,
    el("td", { className: "state", data: { label: "State" }, text: text(alarm.state) }),
    el("td", { data: { label: "Room" }, text: text(alarm.room) }),
    el("td", { data: { label: "Device" }, text: text(alarm.device) }),
    el("td", { className: "type", data: { label: "Type" }, text: text(alarm.type) }),
    el("td", { data: { label: "Value" }, text: text(alarm.value) }),
    timeCell("Raised", raisedAt(alarm)),
    timeCell("Acknowledged", alarm.acked_at, alarm.acked_by ? "by " + String(alarm.acked_by) : ""),
    el("td", { className: "actions", data: { label: "Actions" } }, ack, clear, history));
}

const SORT_KEYS = {
  raised: function (alarm) { return [Number(raisedAt(alarm)) || 0, Number(alarm.id) || 0]; },
  severity: function (alarm) { return [RANK[alarm.severity] || 0, Number(alarm.id) || 0]; },
  room: function (alarm) { return [text(alarm.room), Number(alarm.id) || 0]; },
  device: function (alarm) { return [text(alarm.device), Number(alarm.id) || 0]; },
  type: function (alarm) { return [text(alarm.type), Number(alarm.id) || 0]; },
};

function compare(a, b) {
  const key = SORT_KEYS[state.sort.key];
  const [first, tieA] = key(a);
  const [second, tieB] = key(b);
  const order = typeof first === "string" ? first.localeCompare(second) : first - second;
  const result = order || tieA - tieB;
  return state.sort.descending ? -result : result;
}

function render() {
  const shown = [...alarms.values()].filter(wanted);
  shown.sort(compare);
  rowsEl.replaceChildren(...shown.map(row));
  emptyEl.hidden = shown.length > 0;
  for (const id of [...selected]) {
    if (!alarms.has(id)) {
      selected.delete(id);
    }
  }
  const first = (state.cursors.length - 1) * PAGE_SIZE;
  countEl.textContent = state.total === 0
    ? "no alarm matches"
    : (first + 1) + "–" + (first + shown.length) + " of " + formatCount(state.total);
  previousEl.disabled = state.cursors.length < 2;
  nextEl.disabled = state.next === null;
  ackMatchingEl.disabled = clearMatchingEl.disabled = state.total === 0;
  ackMatchingEl.textContent = "Acknowledge all " + formatCount(state.total) + " matching";
  clearMatchingEl.textContent = "Clear all " + formatCount(state.total) + " matching";
  showSelection();
}

function showSelection() {
  const count = selected.size;
  ackSelectedEl.disabled = clearSelectedEl.disabled = count === 0;
  ackSelectedEl.textContent = "Acknowledge selected" + (count ? " (" + count + ")" : "");
  clearSelectedEl.textContent = "Clear selected" + (count ? " (" + count + ")" : "");
  const onPage = rowsEl.querySelectorAll("input.pick").length;
  selectPageEl.checked = onPage > 0 && count === onPage;
  selectPageEl.indeterminate = count > 0 && count < onPage;
}

selectPageEl.addEventListener("change", function () {
  for (const pick of rowsEl.querySelectorAll("tr")) {
    const id = pick.dataset.alarmId;
    if (selectPageEl.checked) {
      selected.add(id);
    } else {
      selected.delete(id);
    }
  }
  render();
});

for (const button of document.querySelectorAll("button.sort")) {
  button.addEventListener("click", function () {
    const key = button.dataset.sort;
    state.sort = { key: key, descending: state.sort.key === key ? !state.sort.descending : key === "raised" || key === "severity" };
    for (const header of document.querySelectorAll("th[aria-sort]")) {
      const mine = header.querySelector("button.sort").dataset.sort === key;
      header.setAttribute("aria-sort", mine ? (state.sort.descending ? "descending" : "ascending") : "none");
    }
    render();
  });
}

// -- loading, live ---------------------------------------------------------------------------

// Events that arrive while a page is being fetched may be newer than it: they are applied again
// on top of it, so a slow response never hides a just-raised alarm.
let sinceFetch = null;

function upsert(alarm) {
  if (!isAlarm(alarm)) {
    return;
  }
  const id = String(alarm.id);
  const known = alarms.has(id);
  if (!known && (state.cursors.length > 1 || !wanted(alarm))) {
    return; // new alarms go on the first page, which is not shown
  }
  if (!known) {
    state.total += 1;
  } else if (!wanted(alarm)) {
    state.total = Math.max(0, state.total - 1);
  }
  alarms.set(id, alarm);
  if (historyOf === id) {
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
  const before = state.cursors[state.cursors.length - 1];
  try {
    const body = await getJSON("/api/alarms", { ...filters(), limit: PAGE_SIZE, before: before });
    if (mine !== generation) {
      return;
    }
    alarms.clear();
    for (const alarm of (body && Array.isArray(body.alarms)) ? body.alarms : []) {
      if (isAlarm(alarm)) {
        alarms.set(String(alarm.id), alarm);
      }
    }
    let raisedMeanwhile = 0;
    for (const alarm of sinceFetch || []) {
      // newer than the list, or not in it yet (raised while it was fetched): as a live event would
      const id = String(alarm.id);
      if (!alarms.has(id) && state.cursors.length === 1 && wanted(alarm)) {
        raisedMeanwhile += 1;
        alarms.set(id, alarm);
      } else if (alarms.has(id)) {
        alarms.set(id, alarm);
      }
    }
    state.next = body.next === null || body.next === undefined ? null : body.next;
    state.total = (Number(body.total) || 0) + raisedMeanwhile;
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

function firstPage() {
  state.cursors = [null];
  selected.clear();
  reload();
}

let typing = null;
filtersEl.addEventListener("change", firstPage);
filtersEl.addEventListener("input", function (event) {
  if (event.target.tagName === "INPUT") {
    window.clearTimeout(typing);
    typing = window.setTimeout(firstPage, 300);
  }
});
filtersEl.addEventListener("submit", function (event) {
  event.preventDefault();
  firstPage();
});
previousEl.addEventListener("click", function () {
  if (state.cursors.length > 1) {
    state.cursors.pop();
    selected.clear();
    reload();
  }
});
nextEl.addEventListener("click", function () {
  if (state.next !== null) {
    state.cursors.push(state.next);
    selected.clear();
    reload();
  }
});

// -- bulk ------------------------------------------------------------------------------------

async function bulk(action, body, button) {
  const doing = action === "ack" ? "acknowledged" : "cleared";
  button.disabled = true;
  bulkNoteEl.textContent = "working...";
  try {
    const answer = await sendJSON("/api/alarms/" + action, body);
    const count = Number(answer[action === "ack" ? "acknowledged" : "cleared"]) || 0;
    bulkNoteEl.textContent = formatCount(count) + (count === 1 ? " alarm " : " alarms ") + doing;
    showError("");
  } catch (error) {
    bulkNoteEl.textContent = "";
    showError("Nothing " + doing + ": " + error.message);
  }
  selected.clear();
  reload();
}

ackSelectedEl.addEventListener("click", function () {
  bulk("ack", { ids: [...selected].map(Number) }, ackSelectedEl);
});
clearSelectedEl.addEventListener("click", function () {
  bulk("clear", { ids: [...selected].map(Number) }, clearSelectedEl);
});

function matching(action, button) {
  const chosen = filters();
  const verb = action === "ack" ? "Acknowledge" : "Clear";
  const question = verb + " all " + formatCount(state.total) + " alarms that match the filters?";
  if (window.confirm(question)) {
    bulk(action, Object.keys(chosen).length ? chosen : { state: "all" }, button);
  }
}

ackMatchingEl.addEventListener("click", function () { matching("ack", ackMatchingEl); });
clearMatchingEl.addEventListener("click", function () { matching("clear", clearMatchingEl); });

const live = connectLive([]);
live.on("connect", reload);
live.on("alarm", upsert);
live.on("alarms", reload); // many changed at once (a bulk action)
trackAlarmBadge(live);
