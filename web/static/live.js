// The overview: rooms, then devices, then one tile per attribute, kept current over Socket.IO.
//
// Tiles carry data-key="<room>/<device>/<attr>"; device cards data-device="<room>/<device>" and
// data-offline="true" once the device's newest value is older than PORTAL_OFFLINE_AFTER_S
// (from <body data-offline-after-s>). Names are written with textContent only.
import { trackAlarmBadge } from "./lib/alarm-badge.js";
import { ago, bodyNumber, deviceUrl, el, insertSorted, isValue, setTime, showValue } from "./lib/dom.js";
import { connectLive } from "./lib/live.js";

const roomsEl = document.getElementById("values");
const emptyEl = document.getElementById("empty");
const filterEl = document.getElementById("filter");
const offlineAfterMs = bodyNumber("offlineAfterS", 60) * 1000;

const rooms = new Map(); // room -> {section, devicesEl}
const devices = new Map(); // "room/device" -> {card, tilesEl, badge, seenEl, lastTs, offline}
const tiles = new Map(); // "room/device/attr" -> {tile, valueEl, tsEl, ts}

function roomFor(room) {
  let entry = rooms.get(room);
  if (entry === undefined) {
    const devicesEl = el("div", { className: "devices" });
    const section = el("section", { className: "room", data: { room: room }, "aria-label": "Room " + room },
      el("h2", { text: room }), devicesEl);
    insertSorted(roomsEl, section, room);
    entry = { section: section, devicesEl: devicesEl };
    rooms.set(room, entry);
  }
  return entry;
}

function deviceFor(room, device) {
  const key = room + "/" + device;
  let entry = devices.get(key);
  if (entry === undefined) {
    const badge = el("span", { className: "badge offline", text: "offline", hidden: true });
    const seenEl = el("span", { className: "seen" });
    const tilesEl = el("div", { className: "tiles" });
    const card = el("article", { className: "device", data: { device: key, offline: "false" } },
      el("header", null,
        el("h3", null, el("a", { href: deviceUrl(room, device), text: device })),
        badge, seenEl),
      tilesEl);
    insertSorted(roomFor(room).devicesEl, card, device);
    entry = { card: card, tilesEl: tilesEl, badge: badge, seenEl: seenEl, lastTs: -Infinity, offline: null };
    devices.set(key, entry);
  }
  return entry;
}

function tileFor(item) {
  const key = item.room + "/" + item.device + "/" + item.attr;
  let entry = tiles.get(key);
  if (entry === undefined) {
    const valueEl = el("span", { className: "value" });
    const tsEl = el("time", { className: "ts" });
    const tile = el("div", { className: "tile", data: { key: key } },
      el("span", { className: "attr", text: item.attr }), valueEl, tsEl);
    insertSorted(deviceFor(item.room, item.device).tilesEl, tile, item.attr);
    entry = { tile: tile, valueEl: valueEl, tsEl: tsEl, ts: -Infinity };
    tiles.set(key, entry);
  }
  return entry;
}

function refreshDevice(entry, now) {
  if (entry.lastTs === -Infinity) {
    return;
  }
  const offline = now - entry.lastTs > offlineAfterMs;
  if (offline !== entry.offline) {
    entry.offline = offline;
    entry.badge.hidden = !offline;
    entry.card.dataset.offline = String(offline);
  }
  const text = "last seen " + ago(entry.lastTs, now);
  if (entry.seenEl.textContent !== text) {
    entry.seenEl.textContent = text;
    entry.seenEl.title = new Date(entry.lastTs).toISOString();
  }
}

function apply(item) {
  if (!isValue(item)) {
    return;
  }
  const entry = tileFor(item);
  if (item.ts < entry.ts) {
    return; // older than what is shown (a snapshot racing an update)
  }
  entry.ts = item.ts;
  showValue(entry.valueEl, item.value);
  setTime(entry.tsEl, item.ts);
  const device = devices.get(item.room + "/" + item.device);
  if (item.ts > device.lastTs) {
    device.lastTs = item.ts;
    refreshDevice(device, Date.now());
  }
}

function applyAll(items) {
  items.forEach(apply);
  emptyEl.hidden = tiles.size > 0;
  if (filterEl && filterEl.value.trim() !== "") {
    applyFilter();
  }
}

function applyFilter() {
  const needle = filterEl ? filterEl.value.trim().toLowerCase() : "";
  for (const [key, entry] of devices) {
    entry.card.hidden = needle !== "" && !key.toLowerCase().includes(needle);
  }
  for (const entry of rooms.values()) {
    entry.section.hidden = [...entry.devicesEl.children].every(function (card) { return card.hidden; });
  }
}

if (filterEl) {
  filterEl.addEventListener("input", applyFilter);
}

const live = connectLive([{ scope: "site" }]);
live.on("snapshot", applyAll);
live.on("values", applyAll);
trackAlarmBadge(live);

window.setInterval(function () {
  const now = Date.now();
  for (const entry of devices.values()) {
    refreshDevice(entry, now);
  }
}, 1000);
