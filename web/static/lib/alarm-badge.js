// The header's alarm count: active alarms (red while some are not acknowledged), from
// GET /api/alarms/summary, asked again shortly after "alarm" or "alarms" events (at most once a
// second, so a flood of alarms is a handful of requests) and on every reconnection.
import { getJSON } from "./api.js";
import { formatCount } from "./dom.js";

const AT_MOST_EVERY_MS = 1000;

/** Keep #alarm-count showing how many alarms are active. */
export function trackAlarmBadge(live) {
  const badge = document.getElementById("alarm-count");
  if (!badge) {
    return;
  }
  let timer = null;
  let lastAsked = 0;

  function render(counts) {
    const count = Number(counts.active) || 0;
    const unacked = Number(counts.unacked) || 0;
    badge.textContent = formatCount(count);
    badge.hidden = count === 0;
    badge.dataset.unacked = String(unacked);
    badge.setAttribute("aria-label", count + " active alarms, " + unacked + " not acknowledged");
  }

  async function ask() {
    timer = null;
    lastAsked = Date.now();
    try {
      render(await getJSON("/api/alarms/summary"));
    } catch (error) {
      console.warn("alarm count unavailable:", error.message);
    }
  }

  function soon() {
    if (timer !== null) {
      return;
    }
    if (lastAsked !== 0 && Date.now() - lastAsked < AT_MOST_EVERY_MS) {
      timer = window.setTimeout(ask, AT_MOST_EVERY_MS - (Date.now() - lastAsked));
      return;
    }
    timer = window.setTimeout(ask, 0);
  }

  live.on("connect", soon);
  live.on("alarm", soon);
  live.on("alarms", soon);
}
