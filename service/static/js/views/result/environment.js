// Result panels: where the result was measured (device, versions, inputs) and its downloads.

import { downloadBlob } from "../../api.js";
import { dl, h } from "../../dom.js";
import { showError } from "../../errors.js";

/** The environment and downloads cards, side by side. */
export function environmentPanel(job, result) {
  const env = result.environment || {};
  const downloads = h(
    "div.downloads",
    {},
    h(
      "button",
      {
        type: "button",
        testid: "download-result",
        on: { click: () => downloadBlob(`/v1/jobs/${encodeURIComponent(job.id)}/result`, `prunebench-${job.id}.json`).catch(showError) },
      },
      "Download result JSON",
    ),
  );
  return h(
    "div.grid2",
    {},
    h(
      "div.card",
      { testid: "environment" },
      h("h2", {}, "Environment"),
      dl([
        ["Device", `${env.device || "?"}${env.device_name ? ` (${env.device_name})` : ""}`],
        ["torch", env.torch],
        ["CUDA", env.cuda || "none"],
        ["Worker", env.worker],
        ["prunebench", env.prunebench],
        [
          "Checkpoint",
          result.checkpoint
            ? `${result.checkpoint.name} (${result.checkpoint.arch || result.checkpoint.format}, ${result.checkpoint.num_classes} classes)`
            : undefined,
        ],
        ["Dataset", result.dataset ? `${result.dataset.name} (${result.dataset.images} images, ${result.dataset.annotations} boxes)` : undefined],
        ["Cached", result.cached ? "yes" : "no"],
      ]),
    ),
    h(
      "div.card",
      {},
      h("h2", {}, "Downloads"),
      downloads,
      h("p.muted", {}, "Pruned models are downloadable when the job was submitted with “keep pruned models”."),
    ),
  );
}
