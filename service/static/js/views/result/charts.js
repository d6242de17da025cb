// Result panel: accuracy and cost versus sparsity, with the runs of compared jobs overlaid.

import { legend, lineChart, PALETTE } from "../../charts.js";
import { fmt, h, put, shortId } from "../../dom.js";
import { showError } from "../../errors.js";
import { resultOf } from "../../jobs-ui.js";
import { isCurrent } from "../../router.js";
import { runLabel } from "./runs.js";

/** Two chart cards; `draw()` (re)draws them for `runs` and the jobs in the `compare` set. */
export function chartsPanel(runs, compare, gen) {
  const accuracyBox = h("div.chart-box", { testid: "accuracy-chart" });
  const costBox = h("div.chart-box", { testid: "cost-chart" });

  async function drawCharts() {
    const others = [];
    for (const otherId of compare) {
      try {
        others.push({ id: otherId, result: await resultOf(otherId) });
      } catch (err) {
        showError(err);
      }
    }
    if (!isCurrent(gen)) return;
    const accSeries = [
      {
        name: "mAP@.5:.95",
        color: PALETTE[0],
        testid: "map-point",
        points: runs.map((r) => ({ x: r.sparsity_target, y: r.metrics.map, title: `mAP@.5:.95 at ${runLabel(r)}: ${fmt.num(r.metrics.map, 4)}` })),
      },
      {
        name: "mAP@.5",
        color: PALETTE[1],
        testid: "map50-point",
        points: runs.map((r) => ({ x: r.sparsity_target, y: r.metrics.map50, title: `mAP@.5 at ${runLabel(r)}: ${fmt.num(r.metrics.map50, 4)}` })),
      },
    ];
    const costSeries = [
      {
        name: "latency ms/image",
        color: PALETTE[2],
        testid: "latency-point",
        points: runs.map((r) => ({
          x: r.sparsity_target,
          y: r.speed_ms_per_image.total,
          title: `${fmt.num(r.speed_ms_per_image.total, 2)} ms/image at ${runLabel(r)}`,
        })),
      },
      {
        name: "size MB",
        color: PALETTE[3],
        axis: "right",
        testid: "size-point",
        points: runs
          .filter((r) => r.size_bytes !== null && r.size_bytes !== undefined)
          .map((r) => ({ x: r.sparsity_target, y: r.size_bytes / 1048576, title: `${fmt.bytes(r.size_bytes)} at ${runLabel(r)}` })),
      },
    ];
    others.forEach(({ id, result: other }, i) => {
      const color = PALETTE[(i + 4) % PALETTE.length];
      const oruns = [...(other.runs || [])].sort((a, b) => a.sparsity_target - b.sparsity_target);
      const label = `${shortId(id)} ${other.checkpoint ? other.checkpoint.name : ""} ${other.settings?.method ? other.settings.method : ""}`.trim();
      accSeries.push({
        name: `${label} mAP@.5:.95`,
        color,
        dash: "6 4",
        hollow: true,
        testid: "compare-point",
        points: oruns.map((r) => ({
          x: r.sparsity_target,
          y: r.metrics.map,
          attrs: { "data-job-id": id },
          title: `${label}: mAP@.5:.95 ${fmt.num(r.metrics.map, 4)} at ${runLabel(r)}`,
        })),
      });
      costSeries.push({
        name: `${label} ms/image`,
        color,
        dash: "6 4",
        hollow: true,
        testid: "compare-latency-point",
        points: oruns.map((r) => ({ x: r.sparsity_target, y: r.speed_ms_per_image.total, attrs: { "data-job-id": id } })),
      });
    });
    const pctTick = (v) => `${+(v * 100).toFixed(1)}%`;
    put(
      accuracyBox,
      h("h2", {}, "Accuracy vs sparsity"),
      lineChart(accSeries, {
        xLabel: "target sparsity",
        yLabel: "mAP",
        xFormat: pctTick,
        yFormat: (v) => v.toFixed(2),
        ariaLabel: "mAP versus sparsity",
        testid: "map-chart",
      }),
      legend(accSeries),
    );
    put(
      costBox,
      h("h2", {}, "Latency and size vs sparsity"),
      lineChart(costSeries, {
        xLabel: "target sparsity",
        yLabel: "ms / image",
        y2Label: "size on disk (MB)",
        xFormat: pctTick,
        yFormat: (v) => v.toFixed(1),
        y2Format: (v) => v.toFixed(1),
        ariaLabel: "latency and size versus sparsity",
        testid: "cost-chart-svg",
      }),
      legend(costSeries.filter((s) => s.points.length)),
    );
  }

  return { node: h("div.grid2", {}, h("div.card", {}, accuracyBox), h("div.card", {}, costBox)), draw: drawCharts };
}
