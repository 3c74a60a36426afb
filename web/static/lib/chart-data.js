// What the device page's charts draw, as plain data (no DOM): the precision of an attribute's
// values, and where the line breaks because the device was silent.

/** The number of decimals `value` is written with (at most 6). */
export function decimalsOf(value) {
  if (Number.isInteger(value)) {
    return 0;
  }
  const text = String(value);
  const point = text.indexOf(".");
  return point < 0 || text.includes("e") ? 6 : Math.min(6, text.length - point - 1);
}

/**
 * Columns with a null row wherever the points are farther apart than `gapS`: uPlot draws a gap
 * there instead of a straight line across the silence.
 */
export function withGaps(columns, gapS) {
  const [xs] = columns;
  const out = columns.map(function () { return []; });
  for (let i = 0; i < xs.length; i += 1) {
    if (i > 0 && xs[i] - xs[i - 1] > gapS) {
      out[0].push((xs[i] + xs[i - 1]) / 2);
      for (let c = 1; c < out.length; c += 1) {
        out[c].push(null);
      }
    }
    columns.forEach(function (column, c) { out[c].push(column[i]); });
  }
  return out;
}

/** How far apart points may be before the line breaks: twice the bucket, or three times the usual spacing. */
export function gapFor(xs, bucketS) {
  const spacings = [];
  for (let i = 1; i < xs.length; i += 1) {
    spacings.push(xs[i] - xs[i - 1]);
  }
  spacings.sort(function (a, b) { return a - b; });
  const usual = spacings.length ? spacings[Math.floor(spacings.length / 2)] : bucketS;
  return Math.max(2 * bucketS, 3 * usual);
}
