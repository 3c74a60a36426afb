// The live page: one row per room/device/attribute, kept current over Socket.IO.
//
// The server sends "snapshot" (all latest values) on connect, then "values" after each stored
// batch. Both carry [{room, device, attr, value, ts}] with ts in milliseconds since 1970.
// The status element's data-state is one of: connecting, connected, disconnected, refused.
// Names come from MQTT topics, so they are only ever written with textContent, never as HTML.
(function () {
  "use strict";

  const tbody = document.getElementById("values");
  const statusEl = document.getElementById("status");
  const emptyEl = document.getElementById("empty");
  const entries = new Map(); // key -> {row, valueEl, tsEl, ts}
  const sortedKeys = []; // keys in display order

  function setStatus(state, text) {
    statusEl.dataset.state = state;
    statusEl.textContent = text;
  }

  function isItem(item) {
    return item !== null && typeof item === "object" &&
      typeof item.room === "string" && typeof item.device === "string" &&
      typeof item.attr === "string" && typeof item.ts === "number" &&
      (typeof item.value === "number" || typeof item.value === "string");
  }

  function insertionIndex(key) {
    let low = 0;
    let high = sortedKeys.length;
    while (low < high) {
      const middle = (low + high) >>> 1;
      if (sortedKeys[middle] < key) {
        low = middle + 1;
      } else {
        high = middle;
      }
    }
    return low;
  }

  function cell(row, className, text) {
    const td = document.createElement("td");
    td.className = className;
    td.textContent = text;
    row.appendChild(td);
    return td;
  }

  function entryFor(item) {
    const key = item.room + "/" + item.device + "/" + item.attr;
    let entry = entries.get(key);
    if (entry !== undefined) {
      return entry;
    }
    const row = document.createElement("tr");
    row.className = "tile";
    row.dataset.key = key;
    cell(row, "room", item.room);
    cell(row, "device", item.device);
    cell(row, "attr", item.attr);
    const valueEl = cell(row, "value", "");
    const tsEl = document.createElement("time");
    cell(row, "ts", "").appendChild(tsEl);
    const index = insertionIndex(key);
    const before = index < sortedKeys.length ? entries.get(sortedKeys[index]).row : null;
    tbody.insertBefore(row, before);
    sortedKeys.splice(index, 0, key);
    entry = { row: row, valueEl: valueEl, tsEl: tsEl, ts: -Infinity };
    entries.set(key, entry);
    return entry;
  }

  function apply(item) {
    if (!isItem(item)) {
      return;
    }
    const entry = entryFor(item);
    if (item.ts < entry.ts) {
      return; // older than what is shown (a snapshot racing an update)
    }
    entry.ts = item.ts;
    entry.valueEl.textContent = String(item.value);
    const when = new Date(item.ts);
    entry.tsEl.dateTime = when.toISOString();
    entry.tsEl.title = when.toISOString();
    entry.tsEl.textContent = when.toLocaleString();
  }

  function applyAll(items) {
    if (Array.isArray(items)) {
      items.forEach(apply);
    }
    emptyEl.hidden = entries.size > 0;
  }

  const socket = io();
  socket.on("connect", function () {
    setStatus("connected", "live");
  });
  socket.on("disconnect", function () {
    setStatus("disconnected", "disconnected, reconnecting");
  });
  socket.on("connect_error", function () {
    if (socket.active) {
      setStatus("disconnected", "cannot reach the portal, retrying");
    } else {
      // The server refused the connection: the session is gone.
      setStatus("refused", "signed out, reload the page to sign in");
    }
  });
  socket.on("snapshot", applyAll);
  socket.on("values", applyAll);
})();
