// The overview: one page of devices at a time, kept current over Socket.IO: as tiles (rooms, then
// devices, then one tile per attribute) or as a table (a row per device: room, device, status, last
// seen, values; ?view=table), ordered by name or with the longest silent first (?sort=offline).
//
// A lab may hold tens of thousands of devices, so the page lists PAGE_SIZE of them from
// GET /api/devices (filtered by the search box, ?q= in the address) and subscribes to exactly
// those devices: a flood of new names elsewhere never reaches this page. A "devices" notice (new
// devices appeared) fetches the page again when it has room for them; a "removed" notice that
// takes away a device of the page fetches it again too.
//
// Tiles carry data-key="<room>/<device>/<attr>"; device cards data-device="<room>/<device>",
// data-offline="true" once the device's newest value is older than PORTAL_OFFLINE_AFTER_S
// (from <body data-offline-after-s>) or it is lost, and data-presence (lib/presence.js: online,
// offline, stopped, unknown). Names are written with textContent only.
//
// A page is drawn in parts of DRAW_PART devices, the page yielding between them (live values,
// input, rendering), so that no one task draws all of it; a newer load abandons a drawing under way.
import { trackAlarmBadge } from "./lib/alarm-badge.js";
import { getJSON, removes } from "./lib/api.js";
import {
  ago, bodyNumber, deviceUrl, el, formatCount, insertSorted, isValue, setTime, showValue,
} from "./lib/dom.js";
import { connectLive } from "./lib/live.js";
import { PRESENCE_ATTR, standing } from "./lib/presence.js";

const PAGE_SIZE = 48; // device subscriptions of one page (the portal allows 64 per client)
const DRAW_PART = 12; // devices drawn in one task: a page in four short tasks rather than one long

const roomsEl = document.getElementById("values");
const emptyEl = document.getElementById("empty");
const filterEl = document.getElementById("filter");
const viewEl = document.getElementById("view");
const sortEl = document.getElementById("sort");
const pagerEl = document.getElementById("pager");
const countEl = document.getElementById("page-count");
const previousEl = document.getElementById("page-previous");
const nextEl = document.getElementById("page-next");
const problemEl = document.getElementById("page-problem");
const offlineAfterMs = bodyNumber("offlineAfterS", 60) * 1000;

let rooms = new Map(); // room -> {section, devicesEl}
let devices = new Map(); // "room/device" -> {card, tilesEl, badge, stoppedBadge, seenEl, lastTs, presence, state}
let tiles = new Map(); // "room/device/attr" -> {tile, valueEl, tsEl, item}
// While a page is being drawn (and after a drawing a newer load abandoned): "room/device/attr" ->
// the newest value known of it that is not drawn, the values of the page drawn before and those
// arriving for devices not drawn yet; applied once the page is drawn (see showPage).
let held = null;

const asked = new URLSearchParams(window.location.search);
const state = {
  query: asked.get("q") || "",
  view: asked.get("view") === "table" ? "table" : "tiles",
  sort: asked.get("sort") === "offline" ? "offline" : "name",
  cursors: [null], // the cursor of each page seen so far; the last one is the page shown
  next: null,
  shown: 0,
  total: 0,
  listed: [], // "room/device" of each device of the page (drawn or being drawn)
  loading: null,
};

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

/** A device's "offline" and "stopped" badges, both hidden until refreshDevice shows one. */
function statusBadges() {
  return {
    badge: el("span", { className: "badge offline", text: "offline", hidden: true }),
    stoppedBadge: el("span", { className: "badge stopped", text: "stopped", hidden: true,
      title: "it said goodbye: it disconnected on purpose" }),
  };
}

/** The table view's body (made with the page's first device). */
function tableBody() {
  let body = roomsEl.querySelector("tbody");
  if (body === null) {
    body = el("tbody");
    const heading = ["Room", "Device", "Status", "Last seen", "Values"].map(function (name) {
      return el("th", { scope: "col", text: name });
    });
    roomsEl.append(el("table", { className: "devices-table" },
      el("caption", { className: "visually-hidden", text: "Devices of this page" }),
      el("thead", null, el("tr", null, ...heading)), body));
  }
  return body;
}

/** A device as a row of the table view, in the listing's order; its values are small tiles. */
function deviceRow(room, device, key) {
  const { badge, stoppedBadge } = statusBadges();
  const seenEl = el("span", { className: "seen" });
  const tilesEl = el("div", { className: "tiles" });
  const row = el("tr", { className: "device", data: { device: key, offline: "false", presence: "unknown" } },
    el("td", { text: room }),
    el("td", null, el("a", { href: deviceUrl(room, device), text: device })),
    el("td", null, badge, stoppedBadge),
    el("td", null, seenEl),
    el("td", null, tilesEl));
  tableBody().append(row);
  return { card: row, tilesEl: tilesEl, badge: badge, stoppedBadge: stoppedBadge, seenEl: seenEl,
    lastTs: -Infinity, presence: null, state: null };
}

function deviceFor(room, device) {
  const key = room + "/" + device;
  let entry = devices.get(key);
  if (entry === undefined && state.view === "table") {
    entry = deviceRow(room, device, key);
    devices.set(key, entry);
  }
  if (entry === undefined) {
    const { badge, stoppedBadge } = statusBadges();
    const seenEl = el("span", { className: "seen" });
    const tilesEl = el("div", { className: "tiles" });
    const card = el("article", { className: "device", data: { device: key, offline: "false", presence: "unknown" } },
      el("header", null,
        el("h3", null, el("a", { href: deviceUrl(room, device), text: device })),
        badge, stoppedBadge, seenEl),
      tilesEl);
    insertSorted(roomFor(room).devicesEl, card, device);
    entry = { card: card, tilesEl: tilesEl, badge: badge, stoppedBadge: stoppedBadge, seenEl: seenEl,
      lastTs: -Infinity, presence: null, state: null };
    devices.set(key, entry);
  }
  return entry;
}

function tileFor(item) {
  const key = item.room + "/" + item.device + "/" + item.attr;
  let entry = tiles.get(key);
  if (entry === undefined) {
    const valueEl = el("span", { className: "value" });
    const unitEl = el("span", { className: "unit" });
    const tsEl = el("time", { className: "ts" });
    const tile = el("div", { className: "tile", data: { key: key } },
      el("span", { className: "attr", text: item.attr }), el("span", { className: "reading" }, valueEl, " ", unitEl), tsEl);
    insertSorted(deviceFor(item.room, item.device).tilesEl, tile, item.attr);
    entry = { tile: tile, valueEl: valueEl, unitEl: unitEl, tsEl: tsEl, item: null };
    tiles.set(key, entry);
  }
  return entry;
}

function refreshDevice(entry, now) {
  const state = standing(entry.lastTs, entry.presence, now, offlineAfterMs);
  if (state !== entry.state) {
    entry.state = state;
    entry.badge.hidden = state !== "offline";
    entry.stoppedBadge.hidden = state !== "stopped";
    entry.card.dataset.offline = String(state === "offline");
    entry.card.dataset.presence = state;
  }
  if (entry.lastTs === -Infinity) {
    return;
  }
  const text = "last seen " + ago(entry.lastTs, now);
  if (entry.seenEl.textContent !== text) {
    entry.seenEl.textContent = text;
    entry.seenEl.title = new Date(entry.lastTs).toISOString();
  }
}

function seen(device, ts) {
  if (ts > device.lastTs) {
    device.lastTs = ts;
    refreshDevice(device, Date.now());
  }
}

/** Keep `item` in `held` unless a newer value of the same attribute is there. */
function hold(item) {
  const key = item.room + "/" + item.device + "/" + item.attr;
  const kept = held.get(key);
  if (kept === undefined || item.ts >= kept.ts) {
    held.set(key, item);
  }
}

function apply(item) {
  if (!isValue(item)) {
    return;
  }
  if (!devices.has(item.room + "/" + item.device)) {
    if (held !== null) {
      hold(item); // perhaps a device of the page not drawn yet
    }
    return; // not a device of this page (a value racing a page change)
  }
  if (item.attr === PRESENCE_ATTR) {
    const device = devices.get(item.room + "/" + item.device);
    if (device.presence === null || item.ts >= device.presence.ts) {
      device.presence = item;
      refreshDevice(device, Date.now());
    }
    return;
  }
  const entry = tileFor(item);
  if (entry.item !== null && item.ts < entry.item.ts) {
    return; // older than what is shown (a snapshot racing an update)
  }
  if (typeof item.unit === "string") {
    entry.unitEl.textContent = item.unit; // from the listing: live values do not repeat it
  }
  entry.item = item;
  showValue(entry.valueEl, item.value);
  setTime(entry.tsEl, item.ts);
  seen(devices.get(item.room + "/" + item.device), item.ts);
}

function applyAll(items) {
  items.forEach(apply);
}

/** Wait for the next task: what queued up meanwhile (live values, input, rendering) runs first. */
function nextTask() {
  return new Promise(function (resolve) {
    setTimeout(resolve, 0);
  });
}

/** The device of the listing and its values (those of the listing; apply keeps newer live ones). */
function drawDevice(device) {
  deviceFor(device.room, device.device);
  if (device.presence) {
    apply({ room: device.room, device: device.device, attr: PRESENCE_ATTR, value: device.presence.state,
      ts: device.presence.at });
  }
  for (const attribute of device.attributes) {
    apply({ room: device.room, device: device.device, attr: attribute.attr, value: attribute.value,
      ts: attribute.ts, unit: attribute.unit });
  }
}

/**
 * Show the listing `page` (the answer to `loading`): its counts, pager and subscription at once,
 * its devices DRAW_PART at a time, yielding between parts; gives up when a newer load started.
 */
async function showPage(page, loading) {
  // Live values may be newer than the listing, which the database answered: the values shown so far
  // (and those an abandoned drawing still held) are held, and applied as their device is drawn
  // (where it is still listed and they are the newer ones); so are the values that arrive meanwhile
  // for devices not drawn yet (apply holds them).
  if (held === null) {
    held = new Map();
  }
  for (const entry of tiles.values()) {
    if (entry.item !== null) {
      hold(entry.item);
    }
  }
  for (const entry of devices.values()) {
    if (entry.presence !== null) {
      hold(entry.presence);
    }
  }
  roomsEl.replaceChildren();
  rooms = new Map();
  devices = new Map();
  tiles = new Map();

  state.next = page.next;
  state.shown = page.devices.length;
  state.total = page.total;
  state.listed = page.devices.map(function (device) {
    return device.room + "/" + device.device;
  });
  const first = (state.cursors.length - 1) * PAGE_SIZE;
  emptyEl.hidden = page.total > 0 || state.query !== "";
  pagerEl.hidden = page.total === 0 && state.query === "";
  countEl.textContent = page.total === 0
    ? "no device matches"
    : (first + 1) + "–" + (first + page.devices.length) + " of " + formatCount(page.total) +
      (page.total === 1 ? " device" : " devices");
  previousEl.disabled = state.cursors.length < 2;
  nextEl.disabled = page.next === null;
  live.setScopes(page.devices.map(function (device) {
    return { scope: "device", room: device.room, device: device.device };
  }));

  for (let start = 0; start < page.devices.length; start += DRAW_PART) {
    if (start > 0) {
      await nextTask();
      if (state.loading !== loading) {
        return; // a newer load shows its own page (and takes over what is held)
      }
    }
    page.devices.slice(start, start + DRAW_PART).forEach(drawDevice);
    for (const [key, item] of held) {
      if (devices.has(item.room + "/" + item.device)) {
        held.delete(key);
        apply(item); // shown if it is the newer value
      }
    }
  }
  held = null; // what is left is of devices no longer listed
}

async function load() {
  const cursor = state.cursors[state.cursors.length - 1];
  const query = { limit: PAGE_SIZE, q: state.query, sort: state.sort === "name" ? "" : state.sort, cursor: cursor };
  const loading = getJSON("/api/devices", query);
  state.loading = loading;
  try {
    const page = await loading;
    if (state.loading === loading) {
      problemEl.hidden = true;
      await showPage(page, loading);
    }
  } catch (error) {
    if (state.loading === loading) {
      problemEl.textContent = "Devices could not be listed: " + error.message;
      problemEl.hidden = false;
    }
  }
}

function search() {
  state.query = filterEl.value.trim();
  state.view = viewEl.value === "table" ? "table" : "tiles";
  state.sort = sortEl.value === "offline" ? "offline" : "name";
  state.cursors = [null];
  const address = new URL(window.location.href);
  for (const [name, value, fallback] of [["q", state.query, ""], ["view", state.view, "tiles"], ["sort", state.sort, "name"]]) {
    if (value !== fallback) {
      address.searchParams.set(name, value);
    } else {
      address.searchParams.delete(name);
    }
  }
  window.history.replaceState(null, "", address);
  load();
}

let typing = null;
filterEl.value = state.query;
viewEl.value = state.view;
sortEl.value = state.sort;
viewEl.addEventListener("change", search);
sortEl.addEventListener("change", search);
filterEl.addEventListener("input", function () {
  window.clearTimeout(typing);
  typing = window.setTimeout(search, 250);
});
previousEl.addEventListener("click", function () {
  if (state.cursors.length > 1) {
    state.cursors.pop();
    load();
  }
});
nextEl.addEventListener("click", function () {
  if (state.next !== null) {
    state.cursors.push(state.next);
    load();
  }
});

const live = connectLive([]);
live.on("snapshot", applyAll);
live.on("values", applyAll);
live.on("devices", function () {
  if (state.shown < PAGE_SIZE) {
    load(); // room on this page: new devices may belong here
  }
});
live.on("removed", function (selection) {
  for (const key of state.listed) {
    const cut = key.indexOf("/"); // names hold no "/"
    if (removes(selection, key.slice(0, cut), key.slice(cut + 1))) {
      load(); // devices of this page were removed: the page as it is now
      return;
    }
  }
});
let connectedBefore = false;
live.on("connect", function () {
  if (connectedBefore) {
    load(); // back after a disconnection: the page as it is now, with fresh snapshots
  }
  connectedBefore = true;
});
trackAlarmBadge(live);
load();

window.setInterval(function () {
  const now = Date.now();
  for (const entry of devices.values()) {
    refreshDevice(entry, now);
  }
}, 1000);
