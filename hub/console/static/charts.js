// Chart helpers over the vendored uPlot: time series lines and overlaid bars. Each chart's wrapper element
// carries data-points (the number of non-null values drawn), which tests and people can read off the DOM.
"use strict";

const Charts = (() => {
  const COLORS = ["#1f6feb", "#cf222e", "#1a7f37", "#9a6700", "#8250df"];

  function wrapper(parent, title) {
    const box = document.createElement("div");
    box.className = "chart";
    box.dataset.title = title;
    parent.appendChild(box);
    return box;
  }

  function countPoints(series) {
    return series.reduce((n, s) => n + s.values.filter((v) => v !== null && v !== undefined).length, 0);
  }

  function empty(box, title) {
    box.dataset.points = "0";
    box.innerHTML = `<div class="muted">${title}</div><div class="empty">no data</div>`;
    return box;
  }

  // A line chart over time: t in epoch seconds, one line per series.
  function line(parent, { title, t, series, width = 460, height = 200 }) {
    const box = wrapper(parent, title);
    if (!t.length) return empty(box, title);
    box.dataset.points = String(countPoints(series));
    const opts = {
      title, width, height,
      scales: { x: { time: true } },
      series: [{}, ...series.map((s, i) => ({ label: s.label, stroke: COLORS[i % COLORS.length], width: 2, spanGaps: true }))],
      axes: [{}, { size: 60 }],
    };
    new uPlot(opts, [t, ...series.map((s) => s.values)], box);
    return box;
  }

  // Bars per category (labels), series drawn over each other with transparency.
  function bars(parent, { title, labels, series, width = 460, height = 200 }) {
    const box = wrapper(parent, title);
    if (!labels.length) return empty(box, title);
    box.dataset.points = String(countPoints(series));
    const x = labels.map((_, i) => i);
    labels = labels.map((l) => (typeof l === "number" ? Number(l.toPrecision(3)) : l));
    const drawBars = uPlot.paths.bars({ size: [0.8, 60] });
    const opts = {
      title, width, height,
      scales: { x: { time: false, range: [-0.5, labels.length - 0.5] }, y: { range: (_u, _min, max) => [0, max > 0 ? max * 1.1 : 1] } },
      series: [
        { label: "bin", value: (_u, i) => (i === null || i === undefined ? "" : String(labels[Math.round(i)])) },
        ...series.map((s, i) => ({
          label: s.label, stroke: COLORS[i % COLORS.length], fill: COLORS[i % COLORS.length] + "55", paths: drawBars, points: { show: false },
        })),
      ],
      axes: [{ values: (_u, ticks) => ticks.map((i) => (Number.isInteger(i) && labels[i] !== undefined ? String(labels[i]) : "")) }, { size: 50 }],
    };
    new uPlot(opts, [x, ...series.map((s) => s.values)], box);
    return box;
  }

  return { line, bars };
})();
