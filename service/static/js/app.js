// prunebench dashboard: jobs list, job page (charts, tables, downloads), submit form.
// Plain ES modules, no build step, no external resources. Hash routing: #/jobs, #/jobs/<id>, #/submit.
// The names it shows (methods, statuses) come from GET /v1/meta, never from a copy here.

import { whenUnauthorized } from "./errors.js";
import { pollHealth } from "./health.js";
import { loadMeta } from "./meta.js";
import { startRouter } from "./router.js";
import { initSettings, openSettings, settingsHidden } from "./settings.js";
import { jobView } from "./views/job.js";
import { jobsView } from "./views/jobs.js";
import { submitView } from "./views/submit.js";

const HEALTH_POLL_MS = 10_000;

async function render({ parts, params, setNav, view }, gen) {
  await loadMeta();
  if (parts[0] === "submit") {
    setNav("submit");
    await submitView(view, gen);
  } else if (parts[0] === "jobs" && parts[1]) {
    setNav("jobs");
    await jobView(view, parts[1], params, gen);
  } else {
    setNav("jobs");
    await jobsView(view, params, gen);
  }
}

const route = startRouter(render);
whenUnauthorized(() => {
  if (settingsHidden()) openSettings(true);
});
initSettings(route);
pollHealth();
setInterval(pollHealth, HEALTH_POLL_MS);
route();
