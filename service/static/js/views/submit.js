// The submit form (#/submit): checkpoint (or upload one), dataset, method, sparsities, evaluation settings.

import { ApiError, api, uploadCheckpoint } from "../api.js";
import { fmt, h, put } from "../dom.js";
import { clearError, showError } from "../errors.js";
import { checkpoints } from "../jobs-ui.js";
import { meta } from "../meta.js";
import { isCurrent } from "../router.js";

export async function submitView(view, gen) {
  const ckptSelect = h("select", { id: "f-checkpoint", name: "checkpoint", required: true, testid: "checkpoint-select" });
  const dsSelect = h("select", { id: "f-dataset", name: "dataset", required: true, testid: "dataset-select" });
  const methodSelect = h(
    "select",
    { id: "f-method", name: "method", testid: "method-select" },
    meta().methods.map((m) => h("option", { value: m }, m)),
  );
  // Channel pruning options: shown for the channel method only, sent only then.
  const importance = h(
    "select",
    { id: "f-importance", name: "importance", testid: "importance-select" },
    meta().importances.map((m) => h("option", { value: m }, m)),
  );
  const allocation = h(
    "select",
    { id: "f-allocation", name: "allocation", testid: "allocation-select" },
    meta().allocations.map((m) => h("option", { value: m }, m)),
  );
  const maxLayer = h("input", {
    id: "f-max-layer",
    name: "max_layer_sparsity",
    type: "number",
    min: "0.05",
    max: "0.95",
    step: "0.05",
    value: "0.9",
    testid: "max-layer-input",
  });
  const roundTo = h("input", { id: "f-round-to", name: "round_to", type: "number", min: "1", max: "256", value: "8", testid: "round-to-input" });
  const recoveryChecks = meta().recovery_steps.map((step) =>
    h("input", { type: "checkbox", id: `f-recovery-${step}`, value: step, testid: `recovery-${step}` }),
  );
  const calDataset = h("select", { id: "f-cal-dataset", name: "calibration_dataset", testid: "calibration-dataset-select" });
  const calImages = h("input", {
    id: "f-cal-images",
    name: "calibration_images",
    type: "number",
    min: "1",
    max: "10000",
    value: "256",
    testid: "calibration-images-input",
  });
  const sparsities = h("input", {
    id: "f-sparsities",
    name: "sparsities",
    value: "0,0.2,0.3,0.5",
    required: true,
    testid: "sparsities-input",
    placeholder: "0,0.3,0.5",
    autocomplete: "off",
  });
  const imgSize = h("input", {
    id: "f-img-size",
    name: "img_size",
    type: "number",
    min: "32",
    max: "4096",
    step: "32",
    value: "640",
    testid: "img-size-input",
  });
  const batch = h("input", { id: "f-batch", name: "batch_size", type: "number", min: "1", max: "512", value: "32", testid: "batch-size-input" });
  const maxImages = h("input", { id: "f-max-images", name: "max_images", type: "number", min: "1", placeholder: "all", testid: "max-images-input" });
  const device = h(
    "select",
    { id: "f-device", name: "device", testid: "device-select" },
    ["auto", "cuda", "cpu"].map((d) => h("option", { value: d }, d)),
  );
  const includeDense = h("input", { type: "checkbox", id: "f-dense", checked: true });
  const saveModels = h("input", { type: "checkbox", id: "f-save", testid: "save-models" });
  const useCache = h("input", { type: "checkbox", id: "f-cache", checked: true, testid: "use-cache" });
  const exportOnnx = h("input", { type: "checkbox", id: "f-export", testid: "export-onnx" });
  const latency = h("input", { type: "checkbox", id: "f-latency", testid: "measure-latency" });
  const submitBtn = h("button.primary", { type: "submit", testid: "submit-job" }, "Submit job");

  const fileInput = h("input", { type: "file", id: "f-file", accept: ".pt,.pth,.bin,.ckpt", testid: "upload-input" });
  const uploadBtn = h("button", { type: "button", testid: "upload-button" }, "Upload");
  const uploadFill = h("span.fill");
  const uploadLabel = h("span.label", {}, "");
  const uploadBar = h("div.progress", { testid: "upload-progress", hidden: true }, h("span.track", {}, uploadFill), uploadLabel);

  function field(label, input, help) {
    return h("div.field", {}, h("label", { for: input.id }, label), input, help ? h("small.muted", {}, help) : null);
  }

  async function loadCheckpoints(selectId) {
    const list = await checkpoints(true);
    const groups = new Map();
    for (const c of list) {
      if (!groups.has(c.source)) groups.set(c.source, []);
      groups.get(c.source).push(c);
    }
    const names = { upload: "Uploaded", models_dir: "Mounted", builtin: "Built-in" };
    put(
      ckptSelect,
      ...[...groups].map(([source, items]) =>
        h(
          "optgroup",
          { label: names[source] || source },
          items.map((c) =>
            c.usable === false
              ? h("option", { value: c.id, disabled: true, title: c.problem || "" }, `${c.name} — unusable: ${c.problem || "cannot be loaded"}`)
              : h(
                  "option",
                  { value: c.id, selected: c.id === selectId, dataset: { name: c.name } },
                  `${c.name} — ${c.arch || c.format}, ${c.num_classes} classes, ${fmt.bytes(c.size_bytes)}`,
                ),
          ),
        ),
      ),
    );
    if (!list.length) ckptSelect.append(h("option", { value: "", disabled: true, selected: true }, "no checkpoints: upload one"));
  }

  async function loadDatasets() {
    const list = (await api("/v1/datasets?limit=1000")).items;
    put(dsSelect, ...list.map((d) => h("option", { value: d.name }, `${d.name} — ${d.images} images, ${d.annotations} boxes${d.is_coco ? ", COCO ids" : ""}`)));
    put(calDataset, h("option", { value: "" }, "the evaluated dataset"), ...list.map((d) => h("option", { value: d.name }, `${d.name} — ${d.images} images`)));
    if (!list.length) dsSelect.append(h("option", { value: "", disabled: true, selected: true }, "no datasets configured"));
  }

  uploadBtn.addEventListener("click", async () => {
    const file = fileInput.files?.[0];
    if (!file) {
      showError(new Error("Choose a checkpoint file first."));
      return;
    }
    uploadBtn.disabled = true;
    uploadBar.hidden = false;
    uploadBar.classList.remove("done");
    const onProgress = (loaded, total) => {
      const pct = total ? (100 * loaded) / total : 0;
      uploadFill.style.width = `${pct}%`;
      uploadBar.dataset.percent = pct.toFixed(1);
      uploadLabel.textContent = `${pct.toFixed(0)}% · ${fmt.bytes(loaded)} / ${fmt.bytes(total)}${pct >= 100 ? " · checking…" : ""}`;
    };
    onProgress(0, file.size);
    try {
      const info = await uploadCheckpoint(file, onProgress);
      uploadLabel.textContent = `uploaded ${info.name}: ${info.arch || info.format}, ${info.num_classes} classes`;
      uploadBar.classList.add("done");
      await loadCheckpoints(info.id);
    } catch (err) {
      uploadBar.classList.add("failed");
      uploadLabel.textContent = "upload failed";
      showError(err);
    } finally {
      uploadBtn.disabled = false;
    }
  });

  const channelBox = h(
    "fieldset",
    { testid: "channel-options", hidden: true },
    h("legend", {}, "Channel pruning"),
    field("Importance", importance, "l1 / l2: filter magnitude · bn_scale: BatchNorm |γ| · lamp: layer-adaptive magnitude."),
    field("Allocation", allocation, "uniform: every layer the same ratio · global: one ranking across layers."),
    field("Max layer sparsity", maxLayer, "global: the most of any one layer's channels that may go."),
    field("Round to", roundTo, "Kept channel counts are multiples of this (1 = no rounding)."),
    h(
      "div.field",
      {},
      h("span", {}, "Recovery (no training)"),
      ...recoveryChecks.map((box) => h("label.check", {}, box, ` ${box.value.replace("_", " ")}`)),
      h("small.muted", {}, "bias compensation: fold removed channels' mean into the next layer · bn recalibration: re-estimate BatchNorm statistics."),
    ),
    field("Calibration dataset", calDataset, "Images for bn_recalibration and taylor (a train split keeps them apart from evaluation)."),
    field("Calibration images", calImages, "The first N images by file name."),
  );
  const showChannel = () => {
    channelBox.hidden = methodSelect.value !== "channel";
  };
  methodSelect.addEventListener("change", showChannel);

  const form = h(
    "form.card.submit-form",
    { testid: "submit-form", novalidate: true },
    h("h1", {}, "New pruning job"),
    h(
      "div.grid2",
      {},
      h(
        "fieldset",
        {},
        h("legend", {}, "What to prune"),
        field("Checkpoint", ckptSelect, "Uploaded, mounted (models dir) or built-in."),
        h("div.field.upload", {}, h("label", { for: fileInput.id }, "…or upload a checkpoint"), h("div.row", {}, fileInput, uploadBtn), uploadBar),
        field("Dataset", dsSelect),
        field(
          "Method",
          methodSelect,
          "l1_unstructured: per layer · global_magnitude: one threshold across layers · channel: structured · semi_structured_2_4: 2 of every 4 (sparsity 0.5).",
        ),
        field("Sparsities", sparsities, "Comma-separated fractions in [0, 1), e.g. 0,0.3,0.5."),
      ),
      channelBox,
      h(
        "fieldset",
        {},
        h("legend", {}, "Evaluation"),
        field("Image size", imgSize, "Long side in pixels (val.py default 640)."),
        field("Batch size", batch),
        field("Max images", maxImages, "Evaluate only the first N images; empty = all."),
        field("Device", device),
        h("label.check", {}, includeDense, " include dense baseline (sparsity 0)"),
        h("label.check", {}, saveModels, " keep pruned models for download"),
        h("label.check", {}, useCache, " reuse an identical earlier result"),
        h("label.check", {}, exportOnnx, " export each run to ONNX (checked against PyTorch)"),
        h("label.check", {}, latency, " time each run in every runtime (PyTorch, ONNX Runtime, TensorRT)"),
      ),
    ),
    h("div.actions", {}, submitBtn),
  );

  form.addEventListener("submit", async (e) => {
    e.preventDefault();
    clearError();
    const values = sparsities.value
      .split(/[,\s]+/)
      .filter(Boolean)
      .map(Number);
    if (!values.length || values.some((v) => !Number.isFinite(v) || v < 0 || v >= 1)) {
      showError(new ApiError(0, { title: "Invalid sparsities", detail: "give comma-separated numbers in [0, 1), e.g. 0,0.3,0.5" }));
      return;
    }
    const body = {
      checkpoint: ckptSelect.value,
      dataset: dsSelect.value,
      method: methodSelect.value,
      sparsities: values,
      img_size: Number(imgSize.value) || 640,
      batch_size: Number(batch.value) || 32,
      device: device.value,
      include_dense: includeDense.checked,
      save_models: saveModels.checked,
      use_cache: useCache.checked,
    };
    if (maxImages.value) body.max_images = Number(maxImages.value);
    if (exportOnnx.checked) body.export = {};
    if (latency.checked) body.latency = {};
    if (methodSelect.value === "channel") {
      body.importance = importance.value;
      body.allocation = allocation.value;
      body.max_layer_sparsity = Number(maxLayer.value) || 0.9;
      body.round_to = Number(roundTo.value) || 8;
      body.recovery = recoveryChecks.filter((box) => box.checked).map((box) => box.value);
      body.calibration = { images: Number(calImages.value) || 256 };
      if (calDataset.value) body.calibration.dataset = calDataset.value;
    }
    submitBtn.disabled = true;
    try {
      const job = await api("/v1/jobs", { method: "POST", body });
      location.hash = `#/jobs/${encodeURIComponent(job.id)}`;
    } catch (err) {
      showError(err);
    } finally {
      submitBtn.disabled = false;
    }
  });

  view.append(form);
  const loads = await Promise.allSettled([loadCheckpoints(), loadDatasets()]);
  if (!isCurrent(gen)) return;
  for (const r of loads) if (r.status === "rejected") showError(r.reason);
}
