// Hash routing (#/jobs, #/jobs/<id>, #/submit) and the polling timers of the current view.
//
// Each navigation starts a new "generation"; a view's async work checks isCurrent(gen) before it
// touches the page, and its timers stop when the next view starts.

import { ApiError } from "./api.js";
import { clearError, showError } from "./errors.js";

const view = document.getElementById("view");
let generation = 0;
const timers = new Set();

/** Is `gen` still the view on screen? */
export function isCurrent(gen) {
  return gen === generation;
}

/** Run `fn` every `ms` while view `gen` is on screen; stops polling on a 401/403. */
export function every(ms, fn, gen) {
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

/**
 * Start routing: `render({ parts, params, setNav, view }, gen)` draws the view for the current hash.
 * Returns `route`, which re-renders the current hash (after a key is saved, say).
 */
export function startRouter(render) {
  async function route() {
    stopTimers();
    generation += 1;
    const gen = generation;
    const { parts, params } = parseHash();
    view.replaceChildren();
    try {
      await render({ parts, params, setNav, view }, gen);
    } catch (err) {
      if (gen === generation) showError(err);
    }
  }
  window.addEventListener("hashchange", () => {
    clearError();
    route();
  });
  return route;
}
