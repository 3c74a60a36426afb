// Installed by bench/overview.py in every page before the page's own scripts run
// (BrowserContext.add_init_script): it records, in the page's own clock (performance.now(), ms
// from the start of the navigation), when the overview's values show, the long tasks of the
// page's main thread, and the value updates the page applies. It keeps its work small: it runs
// on the thread it measures.
//
// window.__overview:
//   longTasks  [[start, duration], ...] of every task over 50 ms (PerformanceObserver "longtask")
//   frames     [[start, busy, rendering, script, what], ...] of every animation frame that held a
//              long task ("long-animation-frame" with a blockingDuration): `busy` is its longest task
//              with the style, layout and paint that followed it (blockingDuration + 50 ms), which a
//              long task entry leaves out; `rendering` is their part, `script` the longest script's
//              and `what` that script's invoker and file
//   updates    text changes of a tile's value (.tile .value) since `counting` was set
//   watch      {since, before, first, all, shown}: the devices of the page being waited for (those
//              not in `before`, a Set of data-device keys); `first` and `all` are ms after `since`
//              at which the first of them, then window.__overviewPageSize of them, showed a value
//   next()     start watching the next page (the devices shown now are the old ones) and click Next
//   timings()  the watch, with when the page's HTML and the watched page's GET /api/devices were
//              received (Navigation and Resource Timing), in ms after the watch began
//   count()    start counting updates from 0; returns performance.now()
//   stop()     stop counting; returns [performance.now(), updates]
(function () {
  "use strict";
  const wanted = window.__overviewPageSize || 48;
  const probe = {
    longTasks: [],
    frames: [],
    updates: 0,
    counting: false,
    watch: { since: 0, before: new Set(), first: null, all: null, shown: 0 },
  };
  window.__overview = probe;

  new PerformanceObserver(function (list) {
    for (const entry of list.getEntries()) {
      probe.longTasks.push([entry.startTime, entry.duration]);
    }
  }).observe({ type: "longtask", buffered: true });

  new PerformanceObserver(function (list) {
    for (const entry of list.getEntries()) {
      let script = null;
      for (const candidate of entry.scripts) {
        if (script === null || candidate.duration > script.duration) {
          script = candidate;
        }
      }
      if (entry.blockingDuration === 0) {
        continue; // a frame long only because the page waited (for the network, say), not busy
      }
      const end = entry.startTime + entry.duration;
      probe.frames.push([entry.startTime, entry.blockingDuration + 50, entry.renderStart ? end - entry.renderStart : 0,
        script ? script.duration : 0,
        script ? script.invoker + " (" + script.sourceURL.split("/").pop() + ")" : ""]);
    }
  }).observe({ type: "long-animation-frame", buffered: true });

  function hasValue(device) {
    for (const value of device.querySelectorAll(".tile .value")) {
      if (value.textContent !== "") {
        return true;
      }
    }
    return false;
  }

  function look(watch) {
    const now = performance.now();
    let shown = 0;
    for (const device of document.querySelectorAll("[data-device]")) {
      if (!watch.before.has(device.dataset.device) && hasValue(device)) {
        shown += 1;
      }
    }
    watch.shown = shown;
    if (shown > 0 && watch.first === null) {
      watch.first = now - watch.since;
    }
    if (shown >= wanted) {
      watch.all = now - watch.since;
    }
  }

  new MutationObserver(function (records) {
    if (probe.counting) {
      for (const record of records) {
        // live.js writes a value with textContent: a childList change of the span.value itself
        const target = record.target;
        if (target.nodeType === 1 && target.classList.contains("value") && target.closest(".tile") !== null) {
          probe.updates += 1;
        }
      }
    }
    if (probe.watch.all === null) {
      look(probe.watch);
    }
  }).observe(document, { childList: true, characterData: true, subtree: true });

  probe.next = function () {
    const before = new Set();
    for (const device of document.querySelectorAll("[data-device]")) {
      before.add(device.dataset.device);
    }
    probe.watch = { since: performance.now(), before: before, first: null, all: null, shown: 0 };
    document.getElementById("page-next").click();
  };

  probe.timings = function () {
    const watch = probe.watch;
    const page = performance.getEntriesByType("navigation")[0];
    const listing = performance.getEntriesByType("resource").find(function (entry) {
      return new URL(entry.name).pathname === "/api/devices" && entry.startTime >= watch.since;
    });
    return {
      since: watch.since, first: watch.first, all: watch.all,
      html: page ? page.responseEnd - watch.since : null,
      asked: listing ? listing.startTime - watch.since : null,
      answered: listing ? listing.responseEnd - watch.since : null,
    };
  };

  probe.count = function () {
    probe.updates = 0;
    probe.counting = true;
    return performance.now();
  };

  probe.stop = function () {
    probe.counting = false;
    return [performance.now(), probe.updates];
  };
})();
