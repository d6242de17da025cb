// Result panel: what recovery bought. mAP of each pruned point before and after recovery (bias
// compensation, BN recalibration, fine-tuning) against sparsity, and the fine-tuning loss per epoch.

import { legend, lineChart, PALETTE } from "../../charts.js";
import { fmt, h } from "../../dom.js";
import { runLabel } from "./runs.js";

const pct = (v) => `${+(v * 100).toFixed(1)}%`;

/** Pruned (before recovery) and recovered (after) mAP@.5:.95 per point; the dense point starts both lines. */
function mapSeries(runs) {
  const recovered = runs.filter((r) => r.recovery);
  const dense = runs.find((r) => Number(r.sparsity_target) === 0 && !r.recovery);
  const start = dense ? [{ x: 0, y: dense.metrics.map, title: `dense: mAP@.5:.95 ${fmt.num(dense.metrics.map, 4)}` }] : [];
  const point = (r, key) => ({
    x: r.sparsity_target,
    y: r.recovery[key],
    title: `${runLabel(r)} ${key === "map_before" ? "pruned" : `after ${r.recovery.applied.join(" + ")}`}: mAP@.5:.95 ${fmt.num(r.recovery[key], 4)}`,
  });
  return [
    {
      name: "pruned (before recovery)",
      color: PALETTE[1],
      dash: "6 4",
      testid: "pruned-map-point",
      points: [...start, ...recovered.map((r) => point(r, "map_before"))],
    },
    { name: "recovered", color: PALETTE[2], testid: "recovered-map-point", points: [...start, ...recovered.map((r) => point(r, "map_after"))] },
  ];
}

/** One series per fine-tuned point: the mean total training loss of each epoch. */
function lossSeries(runs) {
  return runs
    .filter((r) => (r.recovery?.train_loss || []).length)
    .map((r, i) => ({
      name: `${runLabel(r)} total loss`,
      color: PALETTE[(i + 3) % PALETTE.length],
      testid: "loss-point",
      points: r.recovery.train_loss.map((p) => ({
        x: p.epoch,
        y: p.total,
        title: `${runLabel(r)} epoch ${p.epoch}: total ${fmt.num(p.total, 4)} (box ${fmt.num(p.box, 4)}, obj ${fmt.num(p.obj, 4)}, cls ${fmt.num(p.cls, 4)})`,
      })),
    }));
}

/** The card, or null when no run was recovered. */
export function recoveryPanel(runs) {
  if (!runs.some((r) => r.recovery)) return null;
  const maps = mapSeries(runs);
  const losses = lossSeries(runs);
  const boxes = [
    h(
      "div.chart-box",
      { testid: "recovery-chart" },
      h("h2", {}, "Pruned vs recovered"),
      lineChart(maps, {
        xLabel: "target sparsity",
        yLabel: "mAP@.5:.95",
        xFormat: pct,
        yFormat: (v) => v.toFixed(2),
        ariaLabel: "mAP before and after recovery versus sparsity",
        testid: "recovery-chart-svg",
      }),
      legend(maps),
    ),
  ];
  if (losses.length) {
    boxes.push(
      h(
        "div.chart-box",
        { testid: "loss-chart" },
        h("h2", {}, "Fine-tuning loss"),
        lineChart(losses, {
          xLabel: "epoch",
          yLabel: "train loss (box + obj + cls)",
          xFormat: (v) => String(v),
          yFormat: (v) => v.toFixed(3),
          yZero: false,
          ariaLabel: "training loss per epoch",
          testid: "loss-chart-svg",
        }),
        legend(losses),
      ),
    );
  }
  return h("div.card", { testid: "recovery" }, h("div.grid2", {}, ...boxes));
}
