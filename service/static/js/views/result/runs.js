// Result panel: the runs table, one row per sparsity point, deltas against the dense baseline.

import { downloadBlob } from "../../api.js";
import { fmt, h } from "../../dom.js";
import { showError } from "../../errors.js";

/** "30%": a run's target sparsity as a label. */
export function runLabel(run) {
  return `${+(Number(run.sparsity_target) * 100).toFixed(2)}%`;
}

/** The runs card (`runs` sorted by target sparsity; `result.runs` gives each run's index). */
export function runsPanel(job, result, runs) {
  const dense = runs.find((r) => Number(r.sparsity_target) === 0);
  const table = h(
    "table.metrics",
    { testid: "runs-table" },
    h(
      "thead",
      {},
      h(
        "tr",
        {},
        [
          "#",
          "Target",
          "Achieved",
          "Global",
          "mAP@.5:.95",
          "Δ mAP",
          "mAP@.5",
          "Δ mAP@.5",
          "mAP@.75",
          "P",
          "R",
          "ms/img",
          "img/s",
          "Speed-up",
          "Params (nonzero)",
          "GFLOPs",
          "Size",
          "Size ratio",
          "Images",
          "Model",
          "ONNX",
        ].map((t) => h("th", {}, t)),
      ),
    ),
    h(
      "tbody",
      {},
      runs.map((r) => {
        const index = (result.runs || []).indexOf(r);
        const d = r.deltas || (dense && r !== dense ? { map: r.metrics.map - dense.metrics.map, map50: r.metrics.map50 - dense.metrics.map50 } : null);
        const deltaCell = (v) => h(`td.num${v < 0 ? ".neg" : v > 0 ? ".pos" : ""}`, {}, d ? fmt.signed(v) : "–");
        const modelPath = r.model_artifact
          ? r.model_artifact.startsWith("/")
            ? r.model_artifact
            : `/v1/jobs/${encodeURIComponent(job.id)}/runs/${index}/model`
          : null;
        return h(
          "tr",
          { testid: "run-row", dataset: { sparsity: r.sparsity_target } },
          h("td.num", {}, index),
          h("td.num", {}, fmt.sparsity(r.sparsity_target)),
          h("td.num", {}, fmt.pct(r.sparsity)),
          h("td.num", {}, fmt.pct(r.global_sparsity)),
          h("td.num.strong", {}, fmt.num(r.metrics.map, 4)),
          deltaCell(d ? d.map : null),
          h("td.num", {}, fmt.num(r.metrics.map50, 4)),
          deltaCell(d ? d.map50 : null),
          h("td.num", {}, fmt.num(r.metrics.map75, 4)),
          h("td.num", {}, fmt.num(r.metrics.precision, 3)),
          h("td.num", {}, fmt.num(r.metrics.recall, 3)),
          h(
            "td.num",
            {
              title: `pre ${fmt.num(r.speed_ms_per_image.preprocess, 2)} · inference ${fmt.num(r.speed_ms_per_image.inference, 2)} · NMS ${fmt.num(r.speed_ms_per_image.nms, 2)}`,
            },
            fmt.num(r.speed_ms_per_image.total, 2),
          ),
          h("td.num", {}, fmt.num(r.images_per_second, 1)),
          h("td.num", {}, r.deltas ? fmt.ratio(r.deltas.speed_ratio) : "–"),
          h("td.num", {}, `${fmt.count(r.nonzero_params)} / ${fmt.count(r.params)}`),
          h("td.num", {}, fmt.num(r.gflops, 2)),
          h("td.num", {}, fmt.bytes(r.size_bytes)),
          h("td.num", {}, r.deltas ? fmt.ratio(r.deltas.size_ratio) : "–"),
          h("td.num", { title: `${r.instances} instances` }, r.images),
          h(
            "td",
            {},
            modelPath
              ? h(
                  "button.small",
                  {
                    type: "button",
                    testid: "download-model",
                    on: { click: () => downloadBlob(modelPath, `${job.id}-s${r.sparsity_target}.pt`).catch(showError) },
                  },
                  "Download",
                )
              : h("span.muted", { title: "submit with save_models to keep pruned models" }, "–"),
          ),
          h(
            "td",
            {},
            r.onnx?.artifact
              ? h(
                  "button.small",
                  {
                    type: "button",
                    testid: "download-onnx",
                    title: `${fmt.bytes(r.onnx.size_bytes)}, opset ${r.onnx.opset}; onnxruntime vs torch ${r.onnx.max_scaled_diff.toExponential(1)} (tolerance ${r.onnx.tolerance})`,
                    on: { click: () => downloadBlob(r.onnx.artifact, `${job.id}-s${r.sparsity_target}.onnx`).catch(showError) },
                  },
                  "ONNX",
                )
              : h("span.muted", { title: "submit with export to keep an ONNX model" }, "–"),
          ),
        );
      }),
    ),
  );
  return h("div.card.scroll", {}, h("h2", {}, "Runs"), table, dense ? null : h("p.muted", {}, "No dense baseline in this job: deltas are not available."));
}
