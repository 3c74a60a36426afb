// The report's charts, drawn with uPlot from the JSON block of the page. Names from the run (error
// reasons) reach the page only as uPlot series labels, which uPlot sets as text, never as HTML.
(function () {
  "use strict";

  const report = JSON.parse(document.getElementById("report-data").textContent);
  const style = getComputedStyle(document.documentElement);
  const PALETTE = ["#2563eb", "#16a34a", "#dc2626", "#9333ea", "#ea580c", "#0891b2", "#a16207", "#db2777", "#6b7280"];
  // Tick steps of the time axis in seconds: round minutes and hours once the run is long.
  const STEPS = [1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200, 10800, 21600, 43200, 86400, 172800, 604800];
  const NUMBER = new Intl.NumberFormat("en", { maximumFractionDigits: 2 });
  const SUFFIXES = [[1e9, "G"], [1e6, "M"], [1e3, "k"]];

  /** Seconds since the start as the time axis says them: s, m:ss or h:mm:ss, by the run's length. */
  function clock(t) {
    const whole = Math.round(t);
    if (report.clock === "s") {
      return String(whole);
    }
    const seconds = String(whole % 60).padStart(2, "0");
    if (report.clock === "m:ss") {
      return Math.floor(whole / 60) + ":" + seconds;
    }
    const minutes = String(Math.floor(whole / 60) % 60).padStart(2, "0");
    return Math.floor(whole / 3600) + ":" + minutes + ":" + seconds;
  }

  /** A y tick as short as it reads: 2.5k, 1M, 0.25 (rounded, so float noise never shows). */
  function compact(value) {
    for (const [size, suffix] of SUFFIXES) {
      if (Math.abs(value) >= size) {
        return String(Number((value / size).toPrecision(6))) + suffix;
      }
    }
    return String(Number(value.toPrecision(6)));
  }

  /** Indices of values with no neighbour: a line needs two points, so uPlot draws these as dots. */
  function lonePoints(values) {
    const lone = [];
    values.forEach(function (value, i) {
      if (value !== null && values[i - 1] == null && values[i + 1] == null) {
        lone.push(i);
      }
    });
    return lone.length ? lone : null;
  }

  function font(size) {
    return size * uPlot.pxRatio + "px system-ui, -apple-system, 'Segoe UI', Roboto, sans-serif";
  }

  /** The run's phases as bands behind the lines, named where the band is wide enough. */
  function shadePhases(u) {
    const ctx = u.ctx;
    const box = u.bbox;
    const px = uPlot.pxRatio;
    ctx.save();
    ctx.font = font(12);
    for (const span of report.phases) {
      const left = u.valToPos(span.start, "x", true);
      const width = u.valToPos(span.end, "x", true) - left;
      ctx.fillStyle = style.getPropertyValue("--phase-" + span.phase).trim();
      ctx.fillRect(left, box.top, width, box.height);
      if (width > 64 * px) {
        ctx.fillStyle = "#6b7280";
        ctx.fillText(span.phase, left + 4 * px, box.top + 14 * px);
      }
    }
    ctx.restore();
  }

  /** The moment the target collapsed: a dashed red line across the plot, labelled. */
  function markCollapse(u) {
    if (report.collapse == null) {
      return;
    }
    const ctx = u.ctx;
    const box = u.bbox;
    const px = uPlot.pxRatio;
    const x = Math.round(u.valToPos(report.collapse, "x", true));
    const nearRight = x > box.left + box.width * 0.8;
    ctx.save();
    ctx.strokeStyle = ctx.fillStyle = style.getPropertyValue("--collapse").trim();
    ctx.lineWidth = 1.5 * px;
    ctx.setLineDash([5 * px, 3 * px]);
    ctx.beginPath();
    ctx.moveTo(x, box.top);
    ctx.lineTo(x, box.top + box.height);
    ctx.stroke();
    ctx.font = font(12);
    ctx.textAlign = nearRight ? "right" : "left";
    ctx.fillText("collapse", x + (nearRight ? -4 : 4) * px, box.top + 30 * px);
    ctx.restore();
  }

  /** The changes of the timeline (scale, rate, pause, storm, stage ...): a thin line across the
   * plot each, in its kind's colour, its words along the top when there is room. */
  function drawMarks(u) {
    const ctx = u.ctx;
    const box = u.bbox;
    const px = uPlot.pxRatio;
    const free = [-Infinity, -Infinity, -Infinity]; // where each row of labels is free from
    ctx.save();
    ctx.font = font(11);
    ctx.textAlign = "left";
    ctx.lineWidth = 1.5 * px;
    for (const mark of report.marks) {
      const x = Math.round(u.valToPos(mark.t, "x", true));
      if (x < box.left || x > box.left + box.width) {
        continue;
      }
      ctx.strokeStyle = ctx.fillStyle = style.getPropertyValue("--mark-" + mark.what).trim() || "#4b5563";
      ctx.beginPath();
      ctx.moveTo(x, box.top);
      ctx.lineTo(x, box.top + box.height);
      ctx.stroke();
      // The words right of the line (left of it near the right edge), in the first row where
      // they overlap no other mark's; none when every row is taken there
      const width = ctx.measureText(mark.text).width;
      const left = x + 3 * px + width < box.left + box.width ? x + 3 * px : x - 3 * px - width;
      const row = free.findIndex((from) => left > from);
      if (row >= 0 && left > box.left) {
        ctx.fillText(mark.text, left, box.top + (44 + 14 * row) * px);
        free[row] = left + width + 6 * px;
      }
    }
    ctx.restore();
  }

  /** The chart's size in its box: the whole width, less height on a phone. */
  function size(el) {
    const width = el.clientWidth;
    return { width: width, height: width < 500 ? 220 : 300 };
  }

  /** A line of the chart; in a layered chart each line is wider than the next, so that lines
   * with the same values all show. */
  function series(chart, name, i) {
    return {
      label: name,
      stroke: PALETTE[i % PALETTE.length],
      width: chart.layered ? 1.6 + 2.2 * (chart.names.length - 1 - i) : 1.6,
      spanGaps: false,
      value: function (_u, value) { return value == null ? "-" : NUMBER.format(value); },
      points: { filter: function (u, index, show) { return show ? null : lonePoints(u.data[index]); } },
    };
  }

  function draw(el, chart) {
    const plot = new uPlot({
      ...size(el),
      scales: {
        x: { time: false, range: function () { return [0, report.end]; } },
        // From zero, to a round number above the highest value.
        y: { range: function (_u, _min, max) { return [0, max > 0 ? uPlot.rangeNum(0, max, 0.1, true)[1] : 1]; } },
      },
      axes: [
        { label: report.x_label, incrs: STEPS, space: 60, values: function (_u, ticks) { return ticks.map(clock); } },
        { label: chart.unit, values: function (_u, ticks) { return ticks.map(compact); } },
      ],
      series: [
        { label: "time", value: function (_u, t) { return t == null ? "-" : clock(t); } },
        ...chart.names.map(function (name, i) { return series(chart, name, i); }),
      ],
      legend: { live: true },
      hooks: { drawClear: [shadePhases], draw: [drawMarks, markCollapse] },
    }, chart.data, el);
    new ResizeObserver(function () {
      const next = size(el);
      if (next.width !== plot.width) {
        plot.setSize(next);
      }
    }).observe(el);
  }

  document.querySelectorAll(".chart[data-chart]").forEach(function (el) {
    draw(el, report.charts[Number(el.dataset.chart)]);
  });
})();
