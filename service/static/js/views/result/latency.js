// Result panel: latency versus sparsity per runtime (jobs submitted with `latency`), and why any
// runtime was not measured on this worker (no GPU, no TensorRT, ...).

import { legend, lineChart, PALETTE } from "../../charts.js";
import { fmt, h } from "../../dom.js";
import { runLabel } from "./runs.js";

/** One series per measured (runtime, batch): ms per image against target sparsity. */
function latencySeries(runs) {
  const byKey = new Map();
  for (const run of runs) {
    for (const row of run.latency || []) {
      if (row.status !== "measured") continue;
      const key = `${row.runtime} b${row.batch}`;
      if (!byKey.has(key)) byKey.set(key, []);
      const speedup = run.deltas?.latency_speedup?.[`${row.runtime}@${row.batch}`];
      byKey.get(key).push({
        x: run.sparsity_target,
        y: row.ms_per_image,
        title: `${key} (${row.precision}, ${row.device}${row.threads ? `, ${row.threads} threads` : ""}) at ${runLabel(run)}: ${fmt.num(row.median_ms, 2)} ms/batch, p90 ${fmt.num(row.p90_ms, 2)}${speedup ? `, ${fmt.num(speedup, 2)}× vs dense` : ""}`,
      });
    }
  }
  return [...byKey.entries()].map(([name, points], i) => ({
    name,
    color: PALETTE[i % PALETTE.length],
    testid: "runtime-latency-point",
    points,
  }));
}

/** Why a runtime has no figures: one line per runtime and reason; plus the notes of measured rows. */
function notes(runs) {
  const lines = new Map();
  for (const run of runs) {
    for (const row of run.latency || []) {
      const text = row.status !== "measured" ? `${row.status}: ${row.reason}` : row.note;
      if (text) lines.set(`${row.runtime}: ${text}`, row.runtime);
    }
  }
  return [...lines.keys()];
}

/** The card, or null when no run has a latency block. */
export function latencyPanel(runs) {
  if (!runs.some((r) => (r.latency || []).length)) return null;
  const series = latencySeries(runs);
  const chart = series.length
    ? lineChart(series, {
        xLabel: "target sparsity",
        yLabel: "ms / image",
        xFormat: (v) => `${+(v * 100).toFixed(1)}%`,
        yFormat: (v) => v.toFixed(2),
        ariaLabel: "latency per runtime versus sparsity",
        testid: "runtime-latency-chart",
      })
    : h("p.muted", {}, "No runtime was measured on this worker.");
  return h(
    "div.card",
    { testid: "runtime-latency" },
    h("h2", {}, "Latency vs sparsity per runtime"),
    h("p.muted", {}, "Network forward only (no decode or NMS): median of the timed batches, per image."),
    chart,
    series.length ? legend(series) : null,
    h(
      "ul.muted",
      { testid: "runtime-notes" },
      notes(runs).map((t) => h("li", {}, t)),
    ),
  );
}
