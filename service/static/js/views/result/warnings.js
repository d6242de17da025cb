// What the result warns about (data normalised or skipped, settings adjusted): one line each, above the charts.

import { h } from "../../dom.js";

/** The warnings card, or null when the result has none. */
export function warningsPanel(result) {
  const warnings = result.warnings || [];
  if (!warnings.length) return null;
  return h("div.card.warnings-card", { testid: "result-warnings" }, h("h2", {}, "Warnings"), h("ul", {}, ...warnings.map((w) => h("li", {}, w))));
}
