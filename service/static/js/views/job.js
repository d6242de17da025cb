// One job (#/jobs/<id>?compare=<ids>): summary, live progress, then its result panels or its error.

import { ApiError, api } from "../api.js";
import { dl, fmt, h, put, shortId, sparsitiesOf } from "../dom.js";
import { cancelJob, checkpointLabel, checkpoints, knownCheckpoints, progressBar, resultOf, statusBadge } from "../jobs-ui.js";
import { isTerminal } from "../meta.js";
import { every, isCurrent } from "../router.js";
import { renderResult } from "./result/index.js";

const POLL_MS = 1000;

export async function jobView(view, id, params, gen) {
  const path = `/v1/jobs/${encodeURIComponent(id)}`;
  const compare = new Set(
    (params.get("compare") || "")
      .split(",")
      .filter(Boolean)
      .filter((c) => c !== id),
  );
  const header = h("div.toolbar");
  const summary = h("div.card");
  const live = h("div.live");
  const results = h("div.results");
  view.append(header, summary, live, results);

  let job = await api(path);
  let shownStatus = null;

  function renderHeader() {
    put(
      header,
      h("a.back", { href: "#/jobs" }, "‹ Jobs"),
      h("h1.mono", { title: job.id }, `Job ${shortId(job.id)}`),
      statusBadge(job.status, "job-status"),
      job.cached ? h("span.tag", {}, "cached") : null,
      h("div.spacer"),
      isTerminal(job.status)
        ? null
        : h(
            "button.danger",
            {
              type: "button",
              testid: "cancel-job",
              on: {
                click: (e) => cancelJob(job.id, e.currentTarget),
              },
            },
            "Cancel job",
          ),
    );
  }

  function renderSummary() {
    const r = job.request || {};
    put(
      summary,
      h(
        "div.cols",
        {},
        dl([
          ["Job id", h("span.mono", {}, job.id)],
          ["Checkpoint", h("span", { title: r.checkpoint }, checkpointLabel(r.checkpoint, knownCheckpoints()))],
          ["Dataset", r.dataset],
          ["Method", r.method],
          ["Sparsities", h("span.mono", {}, sparsitiesOf(r).join(", "))],
          ["Excluded layers", (r.exclude || []).join(", ")],
        ]),
        dl([
          ["Image size", r.img_size],
          ["Batch size", r.batch_size],
          ["Max images", r.max_images ?? "all"],
          ["Device", r.device],
          ["fp16 requested", r.half ? "yes (applies on CUDA only)" : "no"],
          ["Dense baseline", r.include_dense ? "yes" : "no"],
        ]),
        dl([
          ["Created", fmt.date(job.created_at)],
          ["Started", fmt.date(job.started_at)],
          ["Finished", fmt.date(job.finished_at)],
          ["Worker", job.worker],
          ["Attempts", (job.attempts || []).length || undefined],
          ["Owner", job.owner],
        ]),
      ),
      job.error ? h("p.err-text", { testid: "job-error" }, job.error) : null,
    );
  }

  function renderLive() {
    live.replaceChildren();
    if (!isTerminal(job.status))
      live.append(
        h("div.card", {}, h("h2", {}, "Progress"), progressBar(job, "job-progress"), job.progress?.message ? h("p.muted", {}, job.progress.message) : null),
      );
  }

  async function renderTerminal() {
    results.replaceChildren();
    if (job.status === "succeeded") {
      const result = await resultOf(job.id);
      if (!isCurrent(gen)) return;
      await renderResult(job, result, compare, results, gen);
    } else if (job.status === "failed") {
      try {
        await api(`${path}/result`);
      } catch (err) {
        if (err instanceof ApiError) {
          const p = err.problem;
          results.append(
            h(
              "div.card.problem-card",
              { testid: "job-problem" },
              h("h2", {}, p.title || "Job failed"),
              p.detail ? h("pre", {}, typeof p.detail === "string" ? p.detail : JSON.stringify(p.detail, null, 2)) : null,
            ),
          );
        }
      }
    }
  }

  async function update() {
    job = await api(path);
    if (!isCurrent(gen)) return;
    renderHeader();
    renderSummary();
    renderLive();
    if (job.status !== shownStatus) {
      shownStatus = job.status;
      if (isTerminal(job.status)) await renderTerminal();
    }
  }

  try {
    await checkpoints();
  } catch {
    /* names are a nicety */
  }
  await update();
  every(
    POLL_MS,
    async () => {
      if (!isTerminal(job.status)) await update();
    },
    gen,
  );
}
