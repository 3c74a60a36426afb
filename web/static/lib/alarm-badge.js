// The header's alarm count: active alarms, from GET /api/alarms and kept current by "alarm" events.
import { getJSON } from "./api.js";

/** Keep #alarm-count showing how many alarms are active. */
export function trackAlarmBadge(live) {
  const badge = document.getElementById("alarm-count");
  if (!badge) {
    return;
  }
  const active = new Map(); // id -> acknowledged?

  function render() {
    const count = active.size;
    const unacked = [...active.values()].filter(function (acked) { return !acked; }).length;
    badge.textContent = String(count);
    badge.hidden = count === 0;
    badge.dataset.unacked = String(unacked);
    badge.setAttribute("aria-label", count + " active alarms, " + unacked + " not acknowledged");
  }

  function apply(alarm) {
    if (typeof alarm.id !== "number" && typeof alarm.id !== "string") {
      return;
    }
    if (alarm.state === "active") {
      active.set(String(alarm.id), Boolean(alarm.acked_at));
    } else {
      active.delete(String(alarm.id));
    }
  }

  // Events that arrive while the list is being fetched may be newer than the list: they are
  // applied again on top of it, so a slow response never hides a just-raised alarm.
  let sinceFetch = null;

  async function reload() {
    sinceFetch = [];
    try {
      const body = await getJSON("/api/alarms", { state: "active" });
      active.clear();
      for (const alarm of (body && Array.isArray(body.alarms)) ? body.alarms : []) {
        apply(alarm);
      }
      for (const alarm of sinceFetch) {
        apply(alarm);
      }
      render();
    } catch (error) {
      console.warn("alarm count unavailable:", error.message);
    } finally {
      sinceFetch = null;
    }
  }

  live.on("connect", reload);
  live.on("alarm", function (alarm) {
    if (sinceFetch !== null) {
      sinceFetch.push(alarm);
    }
    apply(alarm);
    render();
  });
}
