// The error box under the top bar: API problems (RFC 9457) and other errors, dismissible.

import { ApiError } from "./api.js";
import { h } from "./dom.js";

const errorBox = document.getElementById("error");
let onUnauthorized = () => {};

/** What to do when the API answers 401 (the app opens the API key panel). */
export function whenUnauthorized(fn) {
  onUnauthorized = fn;
}

export function showError(err) {
  if (err && err.name === "AbortError") return;
  console.error(err);
  errorBox.replaceChildren();
  const problem = err instanceof ApiError ? err.problem : { title: "Error", detail: String(err?.message ? err.message : err) };
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
        errors.map((e) => h("li", {}, e?.msg ? `${(e.loc || []).filter((p) => p !== "body").join(".") || "request"}: ${e.msg}` : JSON.stringify(e))),
      ),
    );
  }
  if (err instanceof ApiError && err.status === 401) {
    errorBox.append(h("span.hint", {}, "Enter an API key with the “API key” button at the top right."));
    onUnauthorized();
  }
  errorBox.append(h("button.ghost.close", { type: "button", "aria-label": "dismiss", on: { click: clearError } }, "×"));
  errorBox.hidden = false;
}

export function clearError() {
  errorBox.hidden = true;
  errorBox.replaceChildren();
}
