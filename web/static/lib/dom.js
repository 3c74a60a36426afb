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

// The browser's date and number formats, made once per page: what toLocaleTimeString(),
// toLocaleString() and Number's toLocaleString() write, without setting the locale up at each call.
// The first format a page makes costs tens of milliseconds (the locale's data loaded): warmFormats()
// lets a page pay it while it waits for the network rather than in the task that draws.
let formats = null;

function localFormats() {
  if (formats === null) {
    const time = { hour: "numeric", minute: "numeric", second: "numeric" };
    formats = {
      time: new Intl.DateTimeFormat(undefined, time),
      dateTime: new Intl.DateTimeFormat(undefined, { year: "numeric", month: "numeric", day: "numeric", ...time }),
      number: new Intl.NumberFormat(),
    };
  }
  return formats;
}

/** Make the date and number formats now (a page about to draw many times and counts). */
export function warmFormats() {
  localFormats();
}

/** A count as the browser's locale writes it (what `count.toLocaleString()` gives). */
export function formatCount(count) {
  return localFormats().number.format(count);
}

/** Fill a <time> element with an absolute time (ms since 1970). */
export function setTime(timeEl, ms) {
  const when = new Date(ms);
  if (Number.isNaN(when.getTime())) {
    timeEl.textContent = "";
    return;
  }
  const iso = when.toISOString();
  timeEl.dateTime = iso;
  timeEl.title = iso;
  const today = when.toDateString() === new Date().toDateString();
  timeEl.textContent = (today ? localFormats().time : localFormats().dateTime).format(when);
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
