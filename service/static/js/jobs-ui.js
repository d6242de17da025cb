// Pieces several views share: the checkpoint list (for names), results, status badges, progress bars.

import { api } from "./api.js";
import { h, shortId } from "./dom.js";
import { showError } from "./errors.js";

let checkpointCache = null;

/** The caller's checkpoints (one page of up to 1000), fetched once unless `refresh`. */
export async function checkpoints(refresh = false) {
  if (!checkpointCache || refresh) checkpointCache = (await api("/v1/checkpoints?limit=1000")).items;
  return checkpointCache;
}

/** The checkpoints fetched so far, or null. */
export function knownCheckpoints() {
  return checkpointCache;
}

export function checkpointLabel(ref, list) {
  const found = (list || []).find((c) => c.id === ref || c.name === ref);
  if (found) return found.name;
  return /^[0-9a-f]{64}$/i.test(ref || "") ? shortId(ref) : ref;
}

export function statusBadge(status, testid) {
  return h(`span.badge.s-${status}`, { testid, dataset: { status } }, status);
}

export function progressBar(job, testid, compact = false) {
  const p = job.progress || {};
  const pct = job.status === "succeeded" ? 100 : Math.max(0, Math.min(100, Number(p.percent) || 0));
  const fill = h("span.fill");
  fill.style.width = `${pct}%`;
  const bits = [`${pct.toFixed(0)}%`];
  if (job.status === "running") {
    if (p.stage && !compact) bits.push(p.stage);
    if (p.runs_total) bits.push(`run ${Math.min(p.runs_total, (p.run_index || 0) + 1)}/${p.runs_total}`);
    if (p.sparsity !== null && p.sparsity !== undefined) bits.push(`s=${+Number(p.sparsity).toFixed(3)}`);
    if (p.images_total && !compact) bits.push(`${p.images_done || 0}/${p.images_total} img`);
  } else if (job.status === "queued") {
    bits.push("queued");
  }
  return h(
    "div.progress",
    { testid, role: "progressbar", "aria-valuemin": "0", "aria-valuemax": "100", "aria-valuenow": pct.toFixed(0), dataset: { percent: pct.toFixed(1) } },
    h("span.track", {}, fill),
    h("span.label", {}, bits.join(" · ")),
  );
}

export async function cancelJob(id, button) {
  if (button) button.disabled = true;
  try {
    await api(`/v1/jobs/${encodeURIComponent(id)}`, { method: "DELETE" });
  } catch (err) {
    showError(err);
    if (button) button.disabled = false;
  }
}

const resultCache = new Map();

/** A job's JobResult, fetched once (results never change). */
export async function resultOf(id) {
  if (!resultCache.has(id)) resultCache.set(id, await api(`/v1/jobs/${encodeURIComponent(id)}/result`));
  return resultCache.get(id);
}
