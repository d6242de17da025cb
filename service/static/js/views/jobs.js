// The jobs list (#/jobs?status=&offset=): live status and progress, cancel, pick jobs to compare.

import { ApiError, api } from "../api.js";
import { fmt, h, shortId, sparsitiesOf } from "../dom.js";
import { cancelJob, checkpointLabel, checkpoints, progressBar, statusBadge } from "../jobs-ui.js";
import { isTerminal, meta } from "../meta.js";
import { every, isCurrent } from "../router.js";

const POLL_MS = 1000;
const PAGE_SIZE = 25;

export async function jobsView(view, params, gen) {
  const state = {
    status: params.get("status") || "",
    offset: Math.max(0, Number(params.get("offset")) || 0),
    selected: new Set(),
    rows: new Map(),
    ckpts: [],
  };
  const statusSelect = h(
    "select",
    { testid: "status-filter", "aria-label": "filter by status", on: { change: () => go({ status: statusSelect.value, offset: 0 }) } },
    h("option", { value: "" }, "all statuses"),
    meta().statuses.map((s) => h("option", { value: s, selected: s === state.status }, s)),
  );
  const compareBtn = h(
    "button",
    {
      type: "button",
      testid: "compare-selected",
      disabled: true,
      on: {
        click: () => {
          const ids = [...state.selected];
          location.hash = `#/jobs/${encodeURIComponent(ids[0])}?compare=${ids.slice(1).map(encodeURIComponent).join(",")}`;
        },
      },
    },
    "Compare selected",
  );
  const pager = h("span.pager");
  const tbody = h("tbody");
  const table = h(
    "table.jobs",
    { testid: "jobs-table" },
    h(
      "thead",
      {},
      h(
        "tr",
        {},
        ["", "Job", "Status", "Checkpoint", "Dataset", "Method", "Sparsities", "Created", "Finished", "Progress", ""].map((t) => h("th", {}, t)),
      ),
    ),
    tbody,
  );
  const empty = h("p.muted.empty", { hidden: true }, "No jobs yet. ", h("a", { href: "#/submit" }, "Submit one."));
  view.append(
    h("div.toolbar", {}, h("h1", {}, "Jobs"), h("div.spacer"), statusSelect, compareBtn, h("a.button", { href: "#/submit", testid: "new-job" }, "New job")),
    h("div.card.scroll", {}, table, empty),
    pager,
  );

  function go(next) {
    const q = new URLSearchParams();
    const status = next.status ?? state.status;
    const offset = next.offset ?? state.offset;
    if (status) q.set("status", status);
    if (offset) q.set("offset", String(offset));
    location.hash = `#/jobs${q.toString() ? `?${q}` : ""}`;
  }

  function updateCompare() {
    compareBtn.disabled = state.selected.size < 2;
    compareBtn.textContent = state.selected.size >= 2 ? `Compare ${state.selected.size} jobs` : "Compare selected";
  }

  function renderRow(job) {
    const req = job.request || {};
    const row = state.rows.get(job.id);
    const sig = JSON.stringify([job.status, job.progress, job.finished_at, job.started_at]);
    if (row && row.sig === sig) return row.tr;
    const check = h("input", {
      type: "checkbox",
      "aria-label": `select ${job.id} for comparison`,
      disabled: job.status !== "succeeded",
      checked: state.selected.has(job.id),
      testid: "job-select",
      on: {
        change: (e) => {
          if (e.target.checked) state.selected.add(job.id);
          else state.selected.delete(job.id);
          updateCompare();
        },
      },
    });
    const actions = h("td.actions");
    if (!isTerminal(job.status)) {
      const btn = h("button.danger.small", { type: "button", testid: "cancel-job", on: { click: () => cancelJob(job.id, btn) } }, "Cancel");
      actions.append(btn);
    }
    const cells = [
      h("td", {}, check),
      h("td.mono", {}, h("a", { href: `#/jobs/${encodeURIComponent(job.id)}`, title: job.id, testid: "job-link" }, shortId(job.id))),
      h("td", {}, statusBadge(job.status), job.cached ? h("span.tag", { title: "result reused from an identical earlier job" }, "cached") : null),
      h("td", { title: req.checkpoint }, checkpointLabel(req.checkpoint, state.ckpts)),
      h("td", {}, req.dataset),
      h("td", {}, req.method),
      h(
        "td.mono",
        {},
        sparsitiesOf(req)
          .map((s) => +Number(s).toFixed(3))
          .join(", "),
      ),
      h("td.nowrap", {}, fmt.date(job.created_at)),
      h("td.nowrap", {}, fmt.date(job.finished_at)),
      h(
        "td.progress-cell",
        {},
        isTerminal(job.status)
          ? job.status === "failed"
            ? h("span.err-text", { title: job.error || "" }, job.error ? job.error.slice(0, 60) : "failed")
            : ""
          : progressBar(job, "job-progress", true),
      ),
      actions,
    ];
    const tr = h("tr", { testid: "job-row", dataset: { jobId: job.id, status: job.status } }, cells);
    if (row) row.tr.replaceWith(tr);
    state.rows.set(job.id, { tr, sig });
    return tr;
  }

  async function refresh() {
    const q = new URLSearchParams({ limit: String(PAGE_SIZE), offset: String(state.offset) });
    if (state.status) q.set("status", state.status);
    const page = await api(`/v1/jobs?${q}`);
    if (!isCurrent(gen)) return;
    const jobs = page.items;
    const seen = new Set(jobs.map((j) => j.id));
    for (const [id, row] of state.rows) {
      if (!seen.has(id)) {
        row.tr.remove();
        state.rows.delete(id);
        state.selected.delete(id);
      }
    }
    jobs.forEach((job, i) => {
      const tr = renderRow(job);
      if (tbody.children[i] !== tr) tbody.insertBefore(tr, tbody.children[i] || null);
    });
    empty.hidden = jobs.length > 0 || state.offset > 0;
    updateCompare();
    const total = page.total;
    pager.replaceChildren();
    if (state.offset > 0 || total > jobs.length) {
      pager.append(
        h(
          "button.ghost.small",
          { type: "button", disabled: state.offset === 0, on: { click: () => go({ offset: Math.max(0, state.offset - PAGE_SIZE) }) } },
          "‹ Newer",
        ),
        h("span.muted", {}, ` ${jobs.length ? state.offset + 1 : 0}–${state.offset + jobs.length} of ${total} `),
        h(
          "button.ghost.small",
          { type: "button", disabled: state.offset + jobs.length >= total, on: { click: () => go({ offset: state.offset + PAGE_SIZE }) } },
          "Older ›",
        ),
      );
    }
  }

  try {
    state.ckpts = await checkpoints();
  } catch (err) {
    if (!(err instanceof ApiError) || err.status !== 401) console.warn(err);
  }
  await refresh();
  every(POLL_MS, refresh, gen);
}
