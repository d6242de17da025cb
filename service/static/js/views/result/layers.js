// Result panel: per-layer sparsity of one run (a bar per Conv2d layer, pruned ones highlighted).

import { barChart } from "../../charts.js";
import { fmt, h, put } from "../../dom.js";
import { runLabel } from "./runs.js";

/** The per-layer card; `draw()` draws the run chosen in its select (the sparsest one first). */
export function layersPanel(runs) {
  const runSelect = h(
    "select",
    { testid: "layer-run-select", "aria-label": "run" },
    runs.map((r, i) => h("option", { value: String(i), selected: i === runs.length - 1 }, `sparsity ${runLabel(r)} (achieved ${fmt.pct(r.sparsity)})`)),
  );
  const layerBox = h("div.layer-chart");
  function drawLayers() {
    const r = runs[Number(runSelect.value)] || runs[runs.length - 1];
    const layers = r?.layers || [];
    if (!layers.length) {
      put(layerBox, h("p.muted", {}, "No per-layer report for this run."));
      return;
    }
    const pruned = layers.filter((l) => l.pruned).length;
    put(
      layerBox,
      barChart(
        layers.map((l, i) => ({
          label: l.name,
          value: l.sparsity,
          short: String(i),
          highlight: l.pruned,
          title: `${l.name} [${(l.shape || []).join("×")}]: ${fmt.pct(l.sparsity)} zeros of ${fmt.count(l.params)}${l.pruned ? "" : " (not pruned)"}`,
          attrs: { "data-layer": l.name, "data-sparsity": l.sparsity },
        })),
        {
          ariaLabel: "per-layer sparsity",
          testid: "layer-chart",
          barTestid: "layer-bar",
          yFormat: (v) => `${Math.round(v * 100)}%`,
          xLabel: "Conv2d layer (hover for name)",
          yLabel: "sparsity",
        },
      ),
      h(
        "p.muted",
        {},
        `${layers.length} Conv2d layers, ${pruned} pruned; hover a bar for its name.`,
        h("span.legend-inline", {}, h("span.swatch.pruned-sw"), " pruned ", h("span.swatch.kept-sw"), " left dense"),
      ),
    );
  }
  runSelect.addEventListener("change", drawLayers);
  return {
    node: h("div.card", {}, h("div.toolbar", {}, h("h2", {}, "Per-layer sparsity"), h("div.spacer"), runSelect), layerBox),
    draw: drawLayers,
  };
}
