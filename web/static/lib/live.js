// The page's one Socket.IO connection: status indicator, subscriptions, events.
//
// Server events: "snapshot" (the values of a scope, right after subscribing, perhaps in several
// messages), "values" (batched updates), "alarm" (an alarm object), "alarms" ({count}: many alarms
// changed at once), "devices" (new devices appeared), "removed" (devices removed: {room, device} |
// {room} | {room, prefix} | {prefix}), "error" ({event, error}). Both value events carry [{room, device, attr, value, ts}]
// with ts in milliseconds since 1970.
// The connection passes auth {scopes: []} so the server subscribes it to nothing by itself; the
// page's scopes are subscribed again after every (re)connect, which also brings fresh snapshots.
// "status" ({broker, database, ingest, live, waiting, problem, replica}) is the portal's own health:
// while it names a problem the indicator shows it. With several portal replicas, each sends its own,
// and the indicator's tooltip names the replica this page is connected to.
// #status[data-state] is one of: connecting, connected, degraded, disconnected, refused.

const statusEl = () => document.getElementById("status");

function setStatus(state, text) {
  const node = statusEl();
  if (node) {
    node.dataset.state = state;
    node.textContent = text;
  }
}

function sameScope(a, b) {
  return a.scope === b.scope && a.room === b.room && a.device === b.device;
}

/**
 * Connect and subscribe to `scopes` ([{scope: "site"}], [{scope: "device", room, device}], ...).
 * Returns {socket, on(event, handler), setScopes(scopes)}; handlers for "snapshot"/"values" get
 * arrays. setScopes() subscribes to what is new and unsubscribes from what is gone.
 */
export function connectLive(initialScopes) {
  const handlers = new Map();
  let scopes = initialScopes.slice();
  const socket = window.io({ auth: { scopes: [] } });

  function dispatch(event, payload) {
    for (const handler of handlers.get(event) || []) {
      try {
        handler(payload);
      } catch (error) {
        console.error("live " + event + " handler failed", error);
      }
    }
  }

  // What the portal says of its own health ("status" events): shown while the connection is up.
  let problem = "";

  function showConnected() {
    if (socket.connected) {
      setStatus(problem ? "degraded" : "connected", problem || "live");
    }
  }

  socket.on("status", function (status) {
    if (status !== null && typeof status === "object") {
      problem = typeof status.problem === "string" ? status.problem : "";
      const node = statusEl();
      if (node) {
        node.title = typeof status.replica === "string" && status.replica ? "portal replica " + status.replica : "";
      }
      showConnected();
      dispatch("status", status);
    }
  });
  socket.on("connect", function () {
    showConnected();
    for (const scope of scopes) {
      socket.emit("subscribe", scope);
    }
    dispatch("connect", null);
  });
  socket.on("disconnect", function (reason) {
    if (reason === "io server disconnect") {
      // The portal ended this session (signed out here or elsewhere, user removed, password changed).
      setStatus("refused", "signed out, reload the page to sign in");
    } else {
      setStatus("disconnected", "disconnected, reconnecting");
    }
  });
  socket.on("connect_error", function () {
    if (socket.active) {
      setStatus("disconnected", "cannot reach the portal, retrying");
    } else {
      setStatus("refused", "signed out, reload the page to sign in");
    }
  });
  for (const event of ["snapshot", "values"]) {
    socket.on(event, function (items) {
      dispatch(event, Array.isArray(items) ? items : []);
    });
  }
  socket.on("devices", function () {
    dispatch("devices", null);
  });
  for (const event of ["alarm", "alarms", "removed"]) {
    socket.on(event, function (payload) {
      if (payload !== null && typeof payload === "object") {
        dispatch(event, payload);
      }
    });
  }
  socket.on("error", function (problem) {
    console.warn("live request refused", problem);
  });

  function setScopes(wanted) {
    if (socket.connected) {
      for (const scope of scopes) {
        if (!wanted.some(function (other) { return sameScope(scope, other); })) {
          socket.emit("unsubscribe", scope);
        }
      }
      for (const scope of wanted) {
        if (!scopes.some(function (other) { return sameScope(scope, other); })) {
          socket.emit("subscribe", scope);
        }
      }
    }
    scopes = wanted.slice(); // (re)connecting subscribes to these
  }

  return {
    socket: socket,
    setScopes: setScopes,
    on: function (event, handler) {
      if (!handlers.has(event)) {
        handlers.set(event, []);
      }
      handlers.get(event).push(handler);
    },
  };
}
