// Result panel: pick other succeeded jobs to overlay on the charts (kept in the URL's ?compare=).

import { api } from "../../api.js";
import { h, put, shortId, sparsitiesOf } from "../../dom.js";
import { showError } from "../../errors.js";
import { checkpointLabel, knownCheckpoints } from "../../jobs-ui.js";
import { isCurrent } from "../../router.js";

/** The picker card; `draw()` lists candidates, `onChange()` runs after the `compare` set changed. */
export function comparePanel(job, compare, gen, onChange) {
  const compareBox = h("div.compare");

  async function drawComparePicker() {
    let candidates = [];
    try {
      candidates = (await api("/v1/jobs?status=succeeded&limit=100")).items.filter((j) => j.id !== job.id);
    } catch (err) {
      showError(err);
    }
    if (!isCurrent(gen)) return;
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
            await onChange();
          },
        },
      });
      list.append(
        h(
          "label.compare-item",
          {},
          box,
          h("span.mono", {}, shortId(c.id)),
          ` ${checkpointLabel(req.checkpoint, knownCheckpoints())} · ${req.dataset} · ${req.method} · ${sparsitiesOf(req).join(",")}`,
        ),
      );
    }
    compareBox.append(list);
  }

  return { node: h("div.card", {}, compareBox), draw: drawComparePicker };
}
