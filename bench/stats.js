// What several runs of one figure are reported as: median (the value), min, max.

const round = (v) => Math.round(v * 100) / 100;

/** Median, min and max of several measurements. */
export function spread(values) {
  const s = [...values].sort((a, b) => a - b);
  const mid = Math.floor(s.length / 2);
  const median = s.length % 2 ? s[mid] : (s[mid - 1] + s[mid]) / 2;
  return { median, min: s[0], max: s[s.length - 1] };
}

/** One figure as bench/run.js prints it: {name, value: median, unit, min, max, runs}. */
export function figure(name, values, unit) {
  const { median, min, max } = spread(values);
  return {
    name,
    value: round(median),
    unit,
    min: round(min),
    max: round(max),
    runs: values.length,
  };
}
