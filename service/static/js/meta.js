// The names the API speaks (methods, statuses, stages), from GET /v1/meta: never copied here.

import { api } from "./api.js";

let names = null;

/** Fetch the names once (later calls reuse them); routing waits for this before drawing a view. */
export async function loadMeta() {
  if (!names) names = await api("/v1/meta");
  return names;
}

/** The names, once loadMeta() has resolved. */
export function meta() {
  if (!names) throw new Error("the API's names (GET /v1/meta) are not loaded yet");
  return names;
}

/** Has a job with this status ended (succeeded, failed or canceled)? */
export function isTerminal(status) {
  return meta().terminal_statuses.includes(status);
}
