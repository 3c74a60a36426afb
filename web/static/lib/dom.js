// Small DOM and formatting helpers shared by the pages.
//
// Every name shown on a page comes from an MQTT topic or payload, so text only ever reaches the
// DOM through textContent or attribute values, never as HTML.

/** Create an element: el("span", {className: "x", text: "hi", data: {key: "a"}}, child, ...). */
export function el(tag, props, ...children) {
  const node = document.createElement(tag);
  const options = props || {};
  for (const [name, value] of Object.entries(options)) {
    if (value === undefined || value === null) {
      continue;
    }
    if (name === "text") {
      node.textContent = String(value);
    } else if (name === "className") {
      node.className = value;
    } else if (name === "data") {
      Object.assign(node.dataset, value);
    } else if (name === "hidden") {
      node.hidden = Boolean(value);
    } else {
      node.setAttribute(name, String(value));
    }
  }
  for (const child of children) {
    if (child !== null && child !== undefined) {
      node.append(child);
    }
  }
  return node;
}

/** Insert `child` into `parent`, keeping children ordered by their data-sort attribute. */
export function insertSorted(parent, child, sortKey) {
  child.dataset.sort = sortKey;
  const items = parent.children;
  let low = 0;
  let high = items.length;
  while (low < high) {
    const middle = (low + high) >>> 1;
    if (items[middle].dataset.sort < sortKey) {
      low = middle + 1;
    } else {
      high = middle;
    }
  }
  parent.insertBefore(child, low < items.length ? items[low] : null);
}

/** True for a value object as the live events and the API send it. */
export function isValue(item) {
  return item !== null && typeof item === "object" &&
    typeof item.room === "string" && typeof item.device === "string" &&
    typeof item.attr === "string" && typeof item.ts === "number" &&
    (typeof item.value === "number" || typeof item.value === "string");
}

/** A value as shown on a page: numbers to 6 significant digits, strings as they are. */
export function formatValue(value) {
  if (typeof value === "number") {
    return Number.isInteger(value) ? String(value) : String(Number(value.toPrecision(6)));
  }
  return String(value);
}

/** Put a value in an element: rounded text, the exact value in its title. */
export function showValue(node, value) {
  node.textContent = formatValue(value);
  node.title = String(value);
}

// Times and counts in one fixed form on every page, whatever the browser's locale: a time of day
// as 24-hour "14:03:07" (local time), with the date before it, "2026-12-06 14:03:07", when it is
// not today; a count as "12,345". They are written by hand, not with Intl or toLocaleString(): a
// page's first locale format loads the locale's data, a task of up to 100 ms on a loaded machine
// that cannot be split, and the overview must stay responsive while it draws.

function twoDigits(number) {
  return number < 10 ? "0" + number : String(number);
}

/** A count with its thousands apart: 12345 -> "12,345", -1234.5 -> "-1,234.5". */
export function formatCount(count) {
  const [whole, fraction] = String(Math.abs(count)).split(".");
  const grouped = whole.replace(/\B(?=(\d{3})+$)/g, ",");
  return (count < 0 ? "-" : "") + grouped + (fraction === undefined ? "" : "." + fraction);
}

/** A time (ms since 1970) as read on a page: "14:03:07" today, "2026-12-06 14:03:07" another day. */
export function formatTime(ms) {
  const when = new Date(ms);
  if (Number.isNaN(when.getTime())) {
    return "";
  }
  const clock = twoDigits(when.getHours()) + ":" + twoDigits(when.getMinutes()) + ":" + twoDigits(when.getSeconds());
  if (when.toDateString() === new Date().toDateString()) {
    return clock;
  }
  const year = String(when.getFullYear()).padStart(4, "0");
  return year + "-" + twoDigits(when.getMonth() + 1) + "-" + twoDigits(when.getDate()) + " " + clock;
}

/** Fill a <time> element with an absolute time (ms since 1970); its title holds the ISO time. */
export function setTime(timeEl, ms) {
  const text = formatTime(ms);
  if (text === "") {
    timeEl.textContent = "";
    return;
  }
  const iso = new Date(ms).toISOString();
  timeEl.dateTime = iso;
  timeEl.title = iso;
  timeEl.textContent = text;
}

/** "just now", "42 s ago", "5 min ago", "3 h ago", "2 d ago". */
export function ago(ms, now) {
  const seconds = Math.max(0, Math.round((now - ms) / 1000));
  if (seconds < 2) {
    return "just now";
  }
  if (seconds < 120) {
    return seconds + " s ago";
  }
  if (seconds < 7200) {
    return Math.round(seconds / 60) + " min ago";
  }
  if (seconds < 172800) {
    return Math.round(seconds / 3600) + " h ago";
  }
  return Math.round(seconds / 86400) + " d ago";
}

/** The URL of a device's page (each name one encoded path segment). */
export function deviceUrl(room, device) {
  return "/device/" + encodeURIComponent(room) + "/" + encodeURIComponent(device);
}

/** A number read from a data attribute of <body>, or `fallback`. */
export function bodyNumber(name, fallback) {
  const parsed = Number(document.body.dataset[name]);
  return Number.isFinite(parsed) && parsed > 0 ? parsed : fallback;
}
