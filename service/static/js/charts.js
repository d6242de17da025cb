// Small SVG charts: line charts with one or two y axes, and a bar chart. No libraries.

const SVG_NS = "http://www.w3.org/2000/svg";

export const PALETTE = ["#2563eb", "#dc2626", "#059669", "#d97706", "#7c3aed", "#db2777", "#0891b2", "#4b5563"];

function el(name, attrs = {}, text) {
  const node = document.createElementNS(SVG_NS, name);
  for (const [k, v] of Object.entries(attrs)) {
    if (v !== undefined && v !== null) node.setAttribute(k, String(v));
  }
  if (text !== undefined) node.textContent = text;
  return node;
}

/** About `count` round tick values covering [lo, hi]. */
export function niceTicks(lo, hi, count = 5) {
  if (!Number.isFinite(lo) || !Number.isFinite(hi)) return [0, 1];
  if (lo === hi) {
    const pad = lo === 0 ? 1 : Math.abs(lo) * 0.1;
    lo -= pad;
    hi += pad;
  }
  const raw = (hi - lo) / Math.max(1, count);
  const mag = 10 ** Math.floor(Math.log10(raw));
  const step = [1, 2, 2.5, 5, 10].map((m) => m * mag).find((s) => s >= raw) || raw;
  const start = Math.floor(lo / step + 1e-9) * step;
  const ticks = [];
  for (let v = start; v <= hi + step * 0.5 && ticks.length < 50; v += step) ticks.push(Number(v.toPrecision(12)));
  if (ticks[ticks.length - 1] < hi) ticks.push(Number((ticks[ticks.length - 1] + step).toPrecision(12)));
  return ticks;
}

function domainOf(values, { zero = false } = {}) {
  const finite = values.filter((v) => Number.isFinite(v));
  if (!finite.length) return [0, 1];
  let lo = Math.min(...finite);
  const hi = Math.max(...finite);
  if (zero) lo = Math.min(0, lo);
  return [lo, hi];
}

/**
 * A line chart. series: [{name, color, axis: "left"|"right", dash, testid, points: [{x, y, title, attrs}]}].
 * Options: xLabel, yLabel, y2Label, xFormat, yFormat, y2Format, yZero, y2Zero, width, height, ariaLabel.
 */
export function lineChart(series, opts = {}) {
  const width = opts.width || 640;
  const height = opts.height || 300;
  const hasRight = series.some((s) => s.axis === "right" && s.points.length);
  const m = { top: 16, right: hasRight ? 64 : 20, bottom: 44, left: 64 };
  const iw = width - m.left - m.right;
  const ih = height - m.top - m.bottom;

  const all = series.flatMap((s) => s.points);
  const [x0, x1] = domainOf(
    all.map((p) => p.x),
    { zero: true },
  );
  const xTicks = niceTicks(x0, Math.max(x1, x0 + 0.1), 6);
  const xs = [xTicks[0], xTicks[xTicks.length - 1]];

  const leftVals = series.filter((s) => s.axis !== "right").flatMap((s) => s.points.map((p) => p.y));
  const rightVals = series.filter((s) => s.axis === "right").flatMap((s) => s.points.map((p) => p.y));
  const yTicks = niceTicks(...domainOf(leftVals, { zero: opts.yZero !== false }), 5);
  const y2Ticks = niceTicks(...domainOf(rightVals, { zero: opts.y2Zero !== false }), 5);
  const ys = [yTicks[0], yTicks[yTicks.length - 1]];
  const y2s = [y2Ticks[0], y2Ticks[y2Ticks.length - 1]];

  const sx = (x) => m.left + ((x - xs[0]) / (xs[1] - xs[0] || 1)) * iw;
  const sy = (y, right) => {
    const [a, b] = right ? y2s : ys;
    return m.top + ih - ((y - a) / (b - a || 1)) * ih;
  };
  const fx = opts.xFormat || ((v) => String(v));
  const fy = opts.yFormat || ((v) => String(v));
  const fy2 = opts.y2Format || ((v) => String(v));

  const svg = el("svg", {
    viewBox: `0 0 ${width} ${height}`,
    class: "chart",
    role: "img",
    "aria-label": opts.ariaLabel || "chart",
    "data-testid": opts.testid,
    preserveAspectRatio: "xMidYMid meet",
  });

  const grid = el("g", { class: "grid" });
  for (const t of yTicks) {
    const y = sy(t, false);
    grid.append(el("line", { x1: m.left, x2: m.left + iw, y1: y, y2: y }));
    grid.append(el("text", { x: m.left - 8, y: y + 4, class: "tick", "text-anchor": "end" }, fy(t)));
  }
  if (hasRight) {
    for (const t of y2Ticks) {
      const y = sy(t, true);
      grid.append(el("text", { x: m.left + iw + 8, y: y + 4, class: "tick right", "text-anchor": "start" }, fy2(t)));
    }
  }
  for (const t of xTicks) {
    const x = sx(t);
    grid.append(el("line", { x1: x, x2: x, y1: m.top, y2: m.top + ih, class: "vgrid" }));
    grid.append(el("text", { x, y: m.top + ih + 18, class: "tick", "text-anchor": "middle" }, fx(t)));
  }
  svg.append(grid);
  svg.append(el("rect", { x: m.left, y: m.top, width: iw, height: ih, class: "frame" }));

  if (opts.xLabel) svg.append(el("text", { x: m.left + iw / 2, y: height - 6, class: "axis-label", "text-anchor": "middle" }, opts.xLabel));
  if (opts.yLabel) {
    svg.append(el("text", { x: 0, y: 0, class: "axis-label", "text-anchor": "middle", transform: `translate(14 ${m.top + ih / 2}) rotate(-90)` }, opts.yLabel));
  }
  if (hasRight && opts.y2Label) {
    svg.append(
      el(
        "text",
        { x: 0, y: 0, class: "axis-label", "text-anchor": "middle", transform: `translate(${width - 10} ${m.top + ih / 2}) rotate(90)` },
        opts.y2Label,
      ),
    );
  }

  series.forEach((s, i) => {
    const color = s.color || PALETTE[i % PALETTE.length];
    const right = s.axis === "right";
    const pts = s.points.filter((p) => Number.isFinite(p.x) && Number.isFinite(p.y)).sort((a, b) => a.x - b.x);
    const g = el("g", { class: "series", "data-series": s.name });
    if (pts.length > 1) {
      g.append(
        el("polyline", {
          points: pts.map((p) => `${sx(p.x).toFixed(1)},${sy(p.y, right).toFixed(1)}`).join(" "),
          fill: "none",
          stroke: color,
          "stroke-width": s.width || 2,
          "stroke-dasharray": s.dash,
        }),
      );
    }
    for (const p of pts) {
      const attrs = {
        cx: sx(p.x).toFixed(1),
        cy: sy(p.y, right).toFixed(1),
        r: s.radius || 4,
        fill: s.hollow ? "#fff" : color,
        stroke: color,
        "stroke-width": 2,
        class: "point",
        "data-testid": s.testid,
        "data-x": p.x,
        "data-y": p.y,
        ...(p.attrs || {}),
      };
      const dot = el("circle", attrs);
      dot.append(el("title", {}, p.title || `${s.name}: ${fx(p.x)} → ${right ? fy2(p.y) : fy(p.y)}`));
      g.append(dot);
    }
    svg.append(g);
  });
  return svg;
}

/** An HTML legend for a list of series. */
export function legend(series) {
  const box = document.createElement("div");
  box.className = "legend";
  series.forEach((s, i) => {
    const item = document.createElement("span");
    item.className = "legend-item";
    const sw = document.createElement("span");
    sw.className = `swatch${s.dash ? " dashed" : ""}${s.hollow ? " hollow" : ""}`;
    sw.style.setProperty("--c", s.color || PALETTE[i % PALETTE.length]);
    item.append(sw, document.createTextNode(s.name + (s.axis === "right" ? " (right axis)" : "")));
    box.append(item);
  });
  return box;
}

/**
 * A vertical bar chart of values in [0, 1]. bars: [{label, value, title, highlight, attrs}].
 */
export function barChart(bars, opts = {}) {
  const width = opts.width || 900;
  const height = opts.height || 240;
  const m = { top: 12, right: 16, bottom: 40, left: 52 };
  const iw = width - m.left - m.right;
  const ih = height - m.top - m.bottom;
  const max = opts.max ?? 1;
  const svg = el("svg", {
    viewBox: `0 0 ${width} ${height}`,
    class: "chart bars",
    role: "img",
    "aria-label": opts.ariaLabel || "bar chart",
    "data-testid": opts.testid,
  });
  const yTicks = niceTicks(0, max, 4);
  const top = yTicks[yTicks.length - 1];
  const sy = (v) => m.top + ih - (v / top) * ih;
  const fy = opts.yFormat || ((v) => String(v));
  for (const t of yTicks) {
    svg.append(el("line", { x1: m.left, x2: m.left + iw, y1: sy(t), y2: sy(t), class: "gridline" }));
    svg.append(el("text", { x: m.left - 8, y: sy(t) + 4, class: "tick", "text-anchor": "end" }, fy(t)));
  }
  const n = Math.max(1, bars.length);
  const slot = iw / n;
  const bw = Math.max(1, slot * 0.8);
  const labelEvery = Math.max(1, Math.ceil(n / 30));
  bars.forEach((b, i) => {
    const x = m.left + i * slot + (slot - bw) / 2;
    const v = Math.max(0, Math.min(top, Number(b.value) || 0));
    const rect = el("rect", {
      x: x.toFixed(2),
      y: sy(v).toFixed(2),
      width: bw.toFixed(2),
      height: Math.max(0, m.top + ih - sy(v)).toFixed(2),
      class: b.highlight ? "bar pruned" : "bar kept",
      "data-testid": opts.barTestid,
      ...(b.attrs || {}),
    });
    rect.append(el("title", {}, b.title || `${b.label}: ${fy(v)}`));
    svg.append(rect);
    if (i % labelEvery === 0) {
      svg.append(el("text", { x: (x + bw / 2).toFixed(1), y: m.top + ih + 14, class: "tick small", "text-anchor": "middle" }, b.short ?? String(i)));
    }
  });
  svg.append(el("line", { x1: m.left, x2: m.left + iw, y1: m.top + ih, y2: m.top + ih, class: "axis" }));
  if (opts.xLabel) svg.append(el("text", { x: m.left + iw / 2, y: height - 6, class: "axis-label", "text-anchor": "middle" }, opts.xLabel));
  if (opts.yLabel) {
    svg.append(el("text", { x: 0, y: 0, class: "axis-label", "text-anchor": "middle", transform: `translate(14 ${m.top + ih / 2}) rotate(-90)` }, opts.yLabel));
  }
  return svg;
}
