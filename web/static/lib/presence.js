// Presence: what a device says of its own connection, on <root>/<room>/<device>/$state (retained):
// "online", "offline" before a clean disconnect, "lost" (its Last Will). Live, it comes as the
// value of the attribute "$state"; /api/devices lists it as {state, at}.

export const PRESENCE_ATTR = "$state";

/**
 * How a device stands: "stopped" (it said goodbye), "offline" (lost, or silent for longer than
 * `offlineAfterMs`), "online", or "unknown" (nothing heard). A presence older than the device's
 * newest value no longer says anything (the device came back without saying so).
 */
export function standing(lastTs, presence, now, offlineAfterMs) {
  if (presence && presence.ts >= lastTs) {
    if (presence.value === "offline") {
      return "stopped";
    }
    if (presence.value === "lost") {
      return "offline";
    }
  }
  if (lastTs === -Infinity) {
    return presence && presence.value === "online" ? "online" : "unknown";
  }
  return now - lastTs > offlineAfterMs ? "offline" : "online";
}
