// prunebench dashboard: jobs list, job page (charts, tables, downloads), submit form.
// Plain ES modules, no build step, no external resources. Hash routing: #/jobs, #/jobs/<id>, #/submit.

import { api, ApiError, downloadBlob, getKey, itemsOf, setKey, uploadCheckpoint } from "./api.js";
import { barChart, legend, lineChart, PALETTE } from "./charts.js";

const POLL_MS = 1000;
const PAGE_SIZE = 25;
const TERMINAL = new Set(["succeeded", "failed", "canceled"]);
const METHODS = ["l1_unstructured", "global_magnitude", "channel"];
const STATUSES = ["queued", "running", "succeeded", "failed", "canceled"];

const view = document.getElementById("view");
const errorBox = document.getElementById("error");

// ---------------------------------------------------------------- DOM helpers

/** h("tag.class", {attrs, on: {click}}, ...children) */
function h(spec, attrs = {}, ...children) {
  const [tag, ...classes] = spec.split(".");
  const node = document.createElement(tag || "div");
  if (classes.length) node.className = classes.join(" ");
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k === "on") for (const [ev, fn] of Object.entries(v)) node.addEventListener(ev, fn);
    else if (k === "testid") node.dataset.testid = v;
    else if (k === "dataset") Object.assign(node.dataset, v);
    else if (k === "text") node.textContent = v;
    else if (k === "class") node.className = [node.className, v].filter(Boolean).join(" ");
    else if (k in node && typeof v !== "string") node[k] = v;
    else node.setAttribute(k, v === true ? "" : String(v));
  }
  for (const child of children.flat()) {
    if (child === undefined || child === null || child === false) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

/** node.replaceChildren without the null/false placeholders of conditional children. */
function put(node, ...children) {
  node.replaceChildren(...children.flat().filter((c) => c !== null && c !== undefined && c !== false));
  return node;
}

const fmt = {
  num: (v, d = 3) => (v === null || v === undefined || !Number.isFinite(Number(v)) ? "–" : Number(v).toFixed(d)),
  signed: (v, d = 4) => (v === null || v === undefined ? "–" : `${v >= 0 ? "+" : ""}${Number(v).toFixed(d)}`),
  pct: (v) => (v === null || v === undefined ? "–" : `${(Number(v) * 100).toFixed(1)}%`),
  sparsity: (v) => (v === null || v === undefined ? "–" : `${+(Number(v) * 100).toFixed(2)}%`),
  bytes(n) {
    if (n === null || n === undefined) return "–";
    const units = ["B", "KB", "MB", "GB"];
    let v = Number(n);
    let i = 0;
    while (v >= 1024 && i < units.length - 1) {
      v /= 1024;
      i += 1;
    }
    return i === 0 ? `${v} B` : `${v.toFixed(2)} ${units[i]}`;
  },
  count(n) {
    if (n === null || n === undefined) return "–";
    const v = Number(n);
    if (v >= 1e6) return `${(v / 1e6).toFixed(2)}M`;
    if (v >= 1e3) return `${(v / 1e3).toFixed(1)}k`;
    return String(v);
  },
  date(s) {
    if (!s) return "–";
    const d = new Date(s);
    return Number.isNaN(d.getTime()) ? String(s) : d.toLocaleString();
  },
  ratio: (v) => (v === null || v === undefined ? "–" : `${Number(v).toFixed(2)}×`),
};

function sparsitiesOf(request = {}) {
  if (Array.isArray(request.sparsities)) return request.sparsities;
  return request.sparsity === null || request.sparsity === undefined ? [] : [request.sparsity];
}

function shortId(id) {
  return id && id.length > 12 ? `${id.slice(0, 8)}…` : id || "";
}

// ---------------------------------------------------------------- errors

export function showError(err) {
  if (err && err.name === "AbortError") return;
  console.error(err);
  errorBox.replaceChildren();
  const problem = err instanceof ApiError ? err.problem : { title: "Error", detail: String(err && err.message ? err.message : err) };
  const status = err instanceof ApiError && err.status ? ` (${err.status})` : "";
  errorBox.append(h("strong", { testid: "error-title" }, `${problem.title || "Error"}${status}`));
  if (problem.detail) {
    const detail = typeof problem.detail === "string" ? problem.detail : JSON.stringify(problem.detail);
    errorBox.append(h("span.detail", { testid: "error-detail" }, detail));
  }
  const errors = Array.isArray(problem.errors) ? problem.errors : Array.isArray(problem.detail) ? problem.detail : [];
  if (errors.length) {
    errorBox.append(
      h(
        "ul",
        {},
        errors.map((e) => h("li", {}, e && e.msg ? `${(e.loc || []).filter((p) => p !== "body").join(".") || "request"}: ${e.msg}` : JSON.stringify(e))),
      ),
    );
  }
  if (err instanceof ApiError && err.status === 401) {
    errorBox.append(h("span.hint", {}, "Enter an API key with the “API key” button at the top right."));
    if (settings.hidden) openSettings(true);
  }
  errorBox.append(h("button.ghost.close", { type: "button", "aria-label": "dismiss", on: { click: clearError } }, "×"));
  errorBox.hidden = false;
}

function clearError() {
  errorBox.hidden = true;
  errorBox.replaceChildren();
}

// ---------------------------------------------------------------- settings (API key)

const settings = document.getElementById("settings");
const settingsToggle = document.getElementById("settings-toggle");
const keyInput = document.getElementById("api-key");
const keyState = document.getElementById("key-state");

function renderKeyState() {
  const has = Boolean(getKey());
  keyState.textContent = has ? "key set for this tab" : "no key set";
  settingsToggle.textContent = has ? "API key ✓" : "API key";
  settingsToggle.classList.toggle("warn", !has);
}

function openSettings(open) {
  settings.hidden = !open;
  settingsToggle.setAttribute("aria-expanded", String(open));
  if (open) keyInput.focus();
}

settingsToggle.addEventListener("click", () => openSettings(settings.hidden));
document.getElementById("settings-form").addEventListener("submit", (e) => {
  e.preventDefault();
  setKey(keyInput.value.trim());
  keyInput.value = "";
  renderKeyState();
  openSettings(false);
  clearError();
  route();
});
document.getElementById("clear-key").addEventListener("click", () => {
  setKey("");
  keyInput.value = "";
  renderKeyState();
});

// ---------------------------------------------------------------- health

async function pollHealth() {
  const badge = document.getElementById("health");
  try {
    const res = await fetch("/readyz", { headers: { Accept: "application/json" } });
    badge.textContent = res.ok ? "ready" : "not ready";
    badge.className = `health ${res.ok ? "ok" : "bad"}`;
  } catch {
    badge.textContent = "offline";
    badge.className = "health bad";
  }
}

// ---------------------------------------------------------------- routing

let generation = 0;
const timers = new Set();

function every(ms, fn, gen) {
  let stopped = false;
  let handle;
  const tick = async () => {
    if (stopped || gen !== generation) return;
    try {
      await fn();
    } catch (err) {
      if (gen === generation) showError(err);
      // Without a valid key every poll would fail the same way: wait for the key to be saved.
      if (err instanceof ApiError && (err.status === 401 || err.status === 403)) stopped = true;
    }
    if (!stopped && gen === generation) handle = setTimeout(tick, ms);
  };
  const stop = () => {
    stopped = true;
    clearTimeout(handle);
  };
  timers.add(stop);
  handle = setTimeout(tick, ms);
  return stop;
}

function stopTimers() {
  for (const stop of timers) stop();
  timers.clear();
}

function parseHash() {
  const raw = location.hash.replace(/^#\/?/, "");
  const [path, query = ""] = raw.split("?");
  return { parts: path.split("/").filter(Boolean).map(decodeURIComponent), params: new URLSearchParams(query) };
}

function setNav(name) {
  for (const a of document.querySelectorAll("[data-nav]")) a.classList.toggle("active", a.dataset.nav === name);
}

async function route() {
  stopTimers();
  generation += 1;
  const gen = generation;
  const { parts, params } = parseHash();
  view.replaceChildren();
  try {
    if (parts[0] === "submit") {
      setNav("submit");
      await submitView(gen);
    } else if (parts[0] === "jobs" && parts[1]) {
      setNav("jobs");
      await jobView(parts[1], params, gen);
    } else {
      setNav("jobs");
      await jobsView(params, gen);
    }
  } catch (err) {
    if (gen === generation) showError(err);
  }
}

window.addEventListener("hashchange", () => {
  clearError();
  route();
});

// ---------------------------------------------------------------- shared bits

let checkpointCache = null;
async function checkpoints(refresh = false) {
  if (!checkpointCache || refresh) checkpointCache = itemsOf(await api("/v1/checkpoints"));
  return checkpointCache;
}

function checkpointLabel(ref, list) {
  const found = (list || []).find((c) => c.id === ref || c.name === ref);
  if (found) return found.name;
  return /^[0-9a-f]{64}$/i.test(ref || "") ? shortId(ref) : ref;
}

function statusBadge(status, testid) {
  return h(`span.badge.s-${status}`, { testid, dataset: { status } }, status);
}

function progressBar(job, testid, compact = false) {
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

async function cancelJob(id, button) {
  if (button) button.disabled = true;
  try {
    await api(`/v1/jobs/${encodeURIComponent(id)}`, { method: "DELETE" });
  } catch (err) {
    showError(err);
    if (button) button.disabled = false;
  }
}

// ---------------------------------------------------------------- jobs list

async function jobsView(params, gen) {
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
    STATUSES.map((s) => h("option", { value: s, selected: s === state.status }, s)),
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
    let row = state.rows.get(job.id);
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
    if (!TERMINAL.has(job.status)) {
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
      h("td.mono", {}, sparsitiesOf(req).map((s) => +Number(s).toFixed(3)).join(", ")),
      h("td.nowrap", {}, fmt.date(job.created_at)),
      h("td.nowrap", {}, fmt.date(job.finished_at)),
      h("td.progress-cell", {}, TERMINAL.has(job.status) ? (job.status === "failed" ? h("span.err-text", { title: job.error || "" }, job.error ? job.error.slice(0, 60) : "failed") : "") : progressBar(job, "job-progress", true)),
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
    if (gen !== generation) return;
    const jobs = itemsOf(page);
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
    const total = page && typeof page === "object" && !Array.isArray(page) ? page.total : undefined;
    pager.replaceChildren();
    if (state.offset > 0 || jobs.length >= PAGE_SIZE || (total !== undefined && total > jobs.length)) {
      pager.append(
        h("button.ghost.small", { type: "button", disabled: state.offset === 0, on: { click: () => go({ offset: Math.max(0, state.offset - PAGE_SIZE) }) } }, "‹ Newer"),
        h("span.muted", {}, ` ${jobs.length ? state.offset + 1 : 0}–${state.offset + jobs.length}${total !== undefined ? ` of ${total}` : ""} `),
        h(
          "button.ghost.small",
          { type: "button", disabled: total !== undefined ? state.offset + jobs.length >= total : jobs.length < PAGE_SIZE, on: { click: () => go({ offset: state.offset + PAGE_SIZE }) } },
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

// ---------------------------------------------------------------- job page

const resultCache = new Map();
async function resultOf(id) {
  if (!resultCache.has(id)) resultCache.set(id, await api(`/v1/jobs/${encodeURIComponent(id)}/result`));
  return resultCache.get(id);
}

function dl(pairs) {
  return h(
    "dl.kv",
    {},
    pairs.filter(([, v]) => v !== undefined && v !== null && v !== "").flatMap(([k, v]) => [h("dt", {}, k), h("dd", {}, v)]),
  );
}

async function jobView(id, params, gen) {
  const path = `/v1/jobs/${encodeURIComponent(id)}`;
  const compare = new Set((params.get("compare") || "").split(",").filter(Boolean).filter((c) => c !== id));
  const header = h("div.toolbar");
  const summary = h("div.card");
  const live = h("div.live");
  const results = h("div.results");
  view.append(header, summary, live, results);

  let job = await api(path);
  let shownStatus = null;

  function renderHeader() {
    put(header, 
      h("a.back", { href: "#/jobs" }, "‹ Jobs"),
      h("h1.mono", { title: job.id }, `Job ${shortId(job.id)}`),
      statusBadge(job.status, "job-status"),
      job.cached ? h("span.tag", {}, "cached") : null,
      h("div.spacer"),
      TERMINAL.has(job.status)
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
    put(summary, 
      h("div.cols", {},
        dl([
          ["Job id", h("span.mono", {}, job.id)],
          ["Checkpoint", h("span", { title: r.checkpoint }, checkpointLabel(r.checkpoint, checkpointCache))],
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
    if (!TERMINAL.has(job.status)) live.append(h("div.card", {}, h("h2", {}, "Progress"), progressBar(job, "job-progress"), job.progress && job.progress.message ? h("p.muted", {}, job.progress.message) : null));
  }

  async function renderTerminal() {
    results.replaceChildren();
    if (job.status === "succeeded") {
      const result = await resultOf(job.id);
      if (gen !== generation) return;
      await renderResult(job, result, compare, results, gen);
    } else if (job.status === "failed") {
      try {
        await api(`${path}/result`);
      } catch (err) {
        if (err instanceof ApiError) {
          const p = err.problem;
          results.append(h("div.card.problem-card", { testid: "job-problem" }, h("h2", {}, p.title || "Job failed"), p.detail ? h("pre", {}, typeof p.detail === "string" ? p.detail : JSON.stringify(p.detail, null, 2)) : null));
        }
      }
    }
  }

  async function update() {
    job = await api(path);
    if (gen !== generation) return;
    renderHeader();
    renderSummary();
    renderLive();
    if (job.status !== shownStatus) {
      shownStatus = job.status;
      if (TERMINAL.has(job.status)) await renderTerminal();
    }
  }

  try {
    await checkpoints();
  } catch {
    /* names are a nicety */
  }
  await update();
  every(POLL_MS, async () => {
    if (!TERMINAL.has(job.status)) await update();
  }, gen);
}

function runLabel(run) {
  return `${+(Number(run.sparsity_target) * 100).toFixed(2)}%`;
}

async function renderResult(job, result, compare, container, gen) {
  const runs = [...(result.runs || [])].sort((a, b) => a.sparsity_target - b.sparsity_target);
  const accuracyBox = h("div.chart-box", { testid: "accuracy-chart" });
  const costBox = h("div.chart-box", { testid: "cost-chart" });
  const compareBox = h("div.compare");

  // ---- charts (re-rendered when the comparison set changes)
  async function drawCharts() {
    const others = [];
    for (const otherId of compare) {
      try {
        others.push({ id: otherId, result: await resultOf(otherId) });
      } catch (err) {
        showError(err);
      }
    }
    if (gen !== generation) return;
    const accSeries = [
      { name: "mAP@.5:.95", color: PALETTE[0], testid: "map-point", points: runs.map((r) => ({ x: r.sparsity_target, y: r.metrics.map, title: `mAP@.5:.95 at ${runLabel(r)}: ${fmt.num(r.metrics.map, 4)}` })) },
      { name: "mAP@.5", color: PALETTE[1], testid: "map50-point", points: runs.map((r) => ({ x: r.sparsity_target, y: r.metrics.map50, title: `mAP@.5 at ${runLabel(r)}: ${fmt.num(r.metrics.map50, 4)}` })) },
    ];
    const costSeries = [
      { name: "latency ms/image", color: PALETTE[2], testid: "latency-point", points: runs.map((r) => ({ x: r.sparsity_target, y: r.speed_ms_per_image.total, title: `${fmt.num(r.speed_ms_per_image.total, 2)} ms/image at ${runLabel(r)}` })) },
      {
        name: "size MB",
        color: PALETTE[3],
        axis: "right",
        testid: "size-point",
        points: runs.filter((r) => r.size_bytes !== null && r.size_bytes !== undefined).map((r) => ({ x: r.sparsity_target, y: r.size_bytes / 1048576, title: `${fmt.bytes(r.size_bytes)} at ${runLabel(r)}` })),
      },
    ];
    others.forEach(({ id, result: other }, i) => {
      const color = PALETTE[(i + 4) % PALETTE.length];
      const oruns = [...(other.runs || [])].sort((a, b) => a.sparsity_target - b.sparsity_target);
      const label = `${shortId(id)} ${other.checkpoint ? other.checkpoint.name : ""} ${other.settings && other.settings.method ? other.settings.method : ""}`.trim();
      accSeries.push({
        name: `${label} mAP@.5:.95`,
        color,
        dash: "6 4",
        hollow: true,
        testid: "compare-point",
        points: oruns.map((r) => ({ x: r.sparsity_target, y: r.metrics.map, attrs: { "data-job-id": id }, title: `${label}: mAP@.5:.95 ${fmt.num(r.metrics.map, 4)} at ${runLabel(r)}` })),
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
    put(accuracyBox, 
      h("h2", {}, "Accuracy vs sparsity"),
      lineChart(accSeries, { xLabel: "target sparsity", yLabel: "mAP", xFormat: pctTick, yFormat: (v) => v.toFixed(2), ariaLabel: "mAP versus sparsity", testid: "map-chart" }),
      legend(accSeries),
    );
    put(costBox, 
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

  // ---- comparison picker
  async function drawComparePicker() {
    let candidates = [];
    try {
      candidates = itemsOf(await api("/v1/jobs?status=succeeded&limit=100")).filter((j) => j.id !== job.id);
    } catch (err) {
      showError(err);
    }
    if (gen !== generation) return;
    put(compareBox, h("h2", {}, "Compare with other jobs"));
    if (!candidates.length) {
      compareBox.append(h("p.muted", {}, "No other finished jobs to compare with."));
      return;
    }
    const list = h("div.compare-list", { testid: "compare-list" });
    for (const c of candidates) {
      const req = c.request || {};
      const box = h("input", {
        type: "checkbox",
        value: c.id,
        checked: compare.has(c.id),
        testid: "compare-toggle",
        on: {
          change: async (e) => {
            if (e.target.checked) compare.add(c.id);
            else compare.delete(c.id);
            const q = compare.size ? `?compare=${[...compare].map(encodeURIComponent).join(",")}` : "";
            history.replaceState(null, "", `#/jobs/${encodeURIComponent(job.id)}${q}`);
            await drawCharts();
          },
        },
      });
      list.append(
        h(
          "label.compare-item",
          {},
          box,
          h("span.mono", {}, shortId(c.id)),
          ` ${checkpointLabel(req.checkpoint, checkpointCache)} · ${req.dataset} · ${req.method} · ${sparsitiesOf(req).join(",")}`,
        ),
      );
    }
    compareBox.append(list);
  }

  // ---- metrics table
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
        ["#", "Target", "Achieved", "Global", "mAP@.5:.95", "Δ mAP", "mAP@.5", "Δ mAP@.5", "mAP@.75", "P", "R", "ms/img", "img/s", "Speed-up", "Params (nonzero)", "GFLOPs", "Size", "Size ratio", "Images", "Model"].map((t) =>
          h("th", {}, t),
        ),
      ),
    ),
    h(
      "tbody",
      {},
      runs.map((r) => {
        const index = (result.runs || []).indexOf(r);
        const d = r.deltas || (dense && r !== dense ? { map: r.metrics.map - dense.metrics.map, map50: r.metrics.map50 - dense.metrics.map50 } : null);
        const deltaCell = (v) => h(`td.num${v < 0 ? ".neg" : v > 0 ? ".pos" : ""}`, {}, d ? fmt.signed(v) : "–");
        const modelPath = r.model_artifact ? (r.model_artifact.startsWith("/") ? r.model_artifact : `/v1/jobs/${encodeURIComponent(job.id)}/runs/${index}/model`) : null;
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
          h("td.num", { title: `pre ${fmt.num(r.speed_ms_per_image.preprocess, 2)} · inference ${fmt.num(r.speed_ms_per_image.inference, 2)} · NMS ${fmt.num(r.speed_ms_per_image.nms, 2)}` }, fmt.num(r.speed_ms_per_image.total, 2)),
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
        );
      }),
    ),
  );

  // ---- per-layer sparsity
  const runSelect = h(
    "select",
    { testid: "layer-run-select", "aria-label": "run" },
    runs.map((r, i) => h("option", { value: String(i), selected: i === runs.length - 1 }, `sparsity ${runLabel(r)} (achieved ${fmt.pct(r.sparsity)})`)),
  );
  const layerBox = h("div.layer-chart");
  function drawLayers() {
    const r = runs[Number(runSelect.value)] || runs[runs.length - 1];
    const layers = (r && r.layers) || [];
    if (!layers.length) {
      put(layerBox, h("p.muted", {}, "No per-layer report for this run."));
      return;
    }
    const pruned = layers.filter((l) => l.pruned).length;
    put(layerBox, 
      barChart(
        layers.map((l, i) => ({
          label: l.name,
          value: l.sparsity,
          short: String(i),
          highlight: l.pruned,
          title: `${l.name} [${(l.shape || []).join("×")}]: ${fmt.pct(l.sparsity)} zeros of ${fmt.count(l.params)}${l.pruned ? "" : " (not pruned)"}`,
          attrs: { "data-layer": l.name, "data-sparsity": l.sparsity },
        })),
        { ariaLabel: "per-layer sparsity", testid: "layer-chart", barTestid: "layer-bar", yFormat: (v) => `${Math.round(v * 100)}%`, xLabel: "Conv2d layer (hover for name)", yLabel: "sparsity" },
      ),
      h("p.muted", {}, `${layers.length} Conv2d layers, ${pruned} pruned; hover a bar for its name.`, h("span.legend-inline", {}, h("span.swatch.pruned-sw"), " pruned ", h("span.swatch.kept-sw"), " left dense")),
    );
  }
  runSelect.addEventListener("change", drawLayers);

  // ---- environment and downloads
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

  container.append(
    h("div.grid2", {}, h("div.card", {}, accuracyBox), h("div.card", {}, costBox)),
    h("div.card", {}, compareBox),
    h("div.card.scroll", {}, h("h2", {}, "Runs"), table, dense ? null : h("p.muted", {}, "No dense baseline in this job: deltas are not available.")),
    h("div.card", {}, h("div.toolbar", {}, h("h2", {}, "Per-layer sparsity"), h("div.spacer"), runSelect), layerBox),
    h(
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
          ["Checkpoint", result.checkpoint ? `${result.checkpoint.name} (${result.checkpoint.arch || result.checkpoint.format}, ${result.checkpoint.num_classes} classes)` : undefined],
          ["Dataset", result.dataset ? `${result.dataset.name} (${result.dataset.images} images, ${result.dataset.annotations} boxes)` : undefined],
          ["Cached", result.cached ? "yes" : "no"],
        ]),
      ),
      h("div.card", {}, h("h2", {}, "Downloads"), downloads, h("p.muted", {}, "Pruned models are downloadable when the job was submitted with “keep pruned models”.")),
    ),
  );
  await drawCharts();
  drawLayers();
  await drawComparePicker();
}

// ---------------------------------------------------------------- submit form

async function submitView(gen) {
  const ckptSelect = h("select", { id: "f-checkpoint", name: "checkpoint", required: true, testid: "checkpoint-select" });
  const dsSelect = h("select", { id: "f-dataset", name: "dataset", required: true, testid: "dataset-select" });
  const methodSelect = h("select", { id: "f-method", name: "method", testid: "method-select" }, METHODS.map((m) => h("option", { value: m }, m)));
  const sparsities = h("input", { id: "f-sparsities", name: "sparsities", value: "0,0.2,0.3,0.5", required: true, testid: "sparsities-input", placeholder: "0,0.3,0.5", autocomplete: "off" });
  const imgSize = h("input", { id: "f-img-size", name: "img_size", type: "number", min: "32", max: "4096", step: "32", value: "640", testid: "img-size-input" });
  const batch = h("input", { id: "f-batch", name: "batch_size", type: "number", min: "1", max: "512", value: "32", testid: "batch-size-input" });
  const maxImages = h("input", { id: "f-max-images", name: "max_images", type: "number", min: "1", placeholder: "all", testid: "max-images-input" });
  const device = h("select", { id: "f-device", name: "device", testid: "device-select" }, ["auto", "cuda", "cpu"].map((d) => h("option", { value: d }, d)));
  const includeDense = h("input", { type: "checkbox", id: "f-dense", checked: true });
  const saveModels = h("input", { type: "checkbox", id: "f-save", testid: "save-models" });
  const useCache = h("input", { type: "checkbox", id: "f-cache", checked: true, testid: "use-cache" });
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
    put(ckptSelect, 
      ...[...groups].map(([source, items]) =>
        h(
          "optgroup",
          { label: names[source] || source },
          items.map((c) => h("option", { value: c.id, selected: c.id === selectId, dataset: { name: c.name } }, `${c.name} — ${c.arch || c.format}, ${c.num_classes} classes, ${fmt.bytes(c.size_bytes)}`)),
        ),
      ),
    );
    if (!list.length) ckptSelect.append(h("option", { value: "", disabled: true, selected: true }, "no checkpoints: upload one"));
  }

  async function loadDatasets() {
    const list = itemsOf(await api("/v1/datasets"));
    put(dsSelect, ...list.map((d) => h("option", { value: d.name }, `${d.name} — ${d.images} images, ${d.annotations} boxes${d.is_coco ? ", COCO ids" : ""}`)));
    if (!list.length) dsSelect.append(h("option", { value: "", disabled: true, selected: true }, "no datasets configured"));
  }

  uploadBtn.addEventListener("click", async () => {
    const file = fileInput.files && fileInput.files[0];
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
        field("Method", methodSelect, "l1_unstructured: per layer · global_magnitude: one threshold across layers · channel: structured."),
        field("Sparsities", sparsities, "Comma-separated fractions in [0, 1), e.g. 0,0.3,0.5."),
      ),
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
  if (gen !== generation) return;
  for (const r of loads) if (r.status === "rejected") showError(r.reason);
}

// ---------------------------------------------------------------- start

renderKeyState();
pollHealth();
setInterval(pollHealth, 10_000);
route();
