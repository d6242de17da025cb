// Result panels of a target job: the frontier (budget drop against the objective, every probe, the answer
// and its boundary highlighted, the budget as a line) and the per-layer sensitivity heat map.

import { legend, lineChart, PALETTE } from "../../charts.js";
import { fmt, h } from "../../dom.js";

const probeTitle = (p, unit) =>
  `sparsity ${p.sparsity} (${p.split}, ${p.images} images): drop ${fmt.signed(p.drop)} ${p.passed ? "within" : "over"} budget; ${fmt.num(p.objective, 4)} ${unit}`;

/** Series of the frontier chart: subset probes, full-split probes, the budget, the answer and the boundary. */
function frontierSeries(search) {
  const point = (p) => ({ x: p.objective, y: p.drop, title: probeTitle(p, search.objective_unit) });
  const full = search.probes.filter((p) => p.split === "full");
  const subset = search.probes.filter((p) => p.split === "subset");
  const xs = search.probes.map((p) => p.objective);
  const answer = full.find((p) => p.sparsity === search.answer);
  const boundary = full.find((p) => p.sparsity === search.boundary);
  const series = [];
  if (subset.length) series.push({ name: "screen probes", color: PALETTE[7], dash: "4 4", hollow: true, testid: "screen-probe", points: subset.map(point) });
  series.push({ name: "whole split", color: PALETTE[0], testid: "full-probe", points: full.map(point) });
  if (xs.length) {
    const budget = { name: `budget ${search.budget}`, color: PALETTE[1], dash: "2 3", radius: 1, testid: "budget-line" };
    series.push({ ...budget, points: [Math.min(...xs), Math.max(...xs)].map((x) => ({ x, y: search.budget })) });
  }
  if (answer) series.push({ name: "answer", color: PALETTE[2], radius: 7, testid: "answer-point", points: [point(answer)] });
  if (boundary) series.push({ name: "boundary", color: PALETTE[3], radius: 6, testid: "boundary-point", points: [point(boundary)] });
  return series;
}

function frontierBox(search) {
  const series = frontierSeries(search);
  return h(
    "div.chart-box",
    { testid: "frontier-chart" },
    h("h2", {}, `Frontier: ${search.metric} drop vs ${search.objective}`),
    lineChart(series, {
      xLabel: `${search.objective} (${search.objective_unit})`,
      yLabel: `${search.budget_kind} ${search.metric} drop`,
      xFormat: (v) => String(+v.toPrecision(3)),
      yFormat: (v) => v.toFixed(3),
      yZero: false,
      ariaLabel: "accuracy drop of every probe against the objective, answer highlighted",
      testid: "frontier-chart-svg",
    }),
    legend(series),
    h("p.muted", { testid: "search-note" }, search.note),
  );
}

/** Background of a heat-map cell: white (no drop) to red (the worst drop measured). */
function heat(drop, worst) {
  const share = Math.max(0, Math.min(1, drop / (worst || 1)));
  return `rgba(220, 38, 38, ${(share * 0.85).toFixed(3)})`;
}

function heatMap(report) {
  const worst = Math.max(0, ...report.layers.flatMap((l) => l.drops));
  const head = h("tr", {}, h("th", {}, "layer"), h("th", {}, "weights"), ...report.levels.map((v) => h("th", {}, fmt.sparsity(v))), h("th", {}, "schedule"));
  const rows = report.layers.map((layer) =>
    h(
      "tr",
      { testid: "sensitivity-row" },
      h("td.mono", {}, layer.name),
      h("td", {}, fmt.count(layer.params)),
      ...layer.drops.map((d, i) =>
        h("td.num", { style: `background:${heat(d, worst)}`, title: `${layer.name} at ${report.levels[i]}: drop ${fmt.signed(d)}` }, fmt.signed(d, 3)),
      ),
      h("td.num", {}, report.schedule[layer.name] ? fmt.sparsity(report.schedule[layer.name]) : "–"),
    ),
  );
  return h("table", { testid: "sensitivity-heatmap" }, h("thead", {}, head), h("tbody", {}, ...rows));
}

/** The card(s), or null when the job was not a target job. */
export function searchPanel(result) {
  const search = result.search;
  if (!search) return null;
  const parts = [frontierBox(search)];
  const report = result.sensitivity;
  if (report) {
    parts.push(
      h(
        "div",
        { testid: "sensitivity" },
        h("h2", {}, `Sensitivity (${report.images} screening images)`),
        h("p.muted", { testid: "sensitivity-note" }, report.note),
        heatMap(report),
      ),
    );
  }
  return h("div.card", { testid: "search" }, ...parts);
}
