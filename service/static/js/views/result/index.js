// A succeeded job's result, panel by panel: warnings, target search, charts, comparison picker, recovery, runtime latency, runs, per-layer sparsity,
// environment.

import { chartsPanel } from "./charts.js";
import { comparePanel } from "./compare.js";
import { environmentPanel } from "./environment.js";
import { latencyPanel } from "./latency.js";
import { layersPanel } from "./layers.js";
import { recoveryPanel } from "./recovery.js";
import { runsPanel } from "./runs.js";
import { searchPanel } from "./search.js";
import { warningsPanel } from "./warnings.js";

/** Append the result panels of `job` to `container`; `compare` is the set of job ids overlaid on the charts. */
export async function renderResult(job, result, compare, container, gen) {
  const runs = [...(result.runs || [])].sort((a, b) => a.sparsity_target - b.sparsity_target);
  const charts = chartsPanel(runs, compare, gen);
  const picker = comparePanel(job, compare, gen, charts.draw);
  const layers = layersPanel(runs);
  const latency = latencyPanel(runs);
  const recovery = recoveryPanel(runs);
  const warnings = warningsPanel(result);
  const search = searchPanel(result);
  container.append(
    ...(warnings ? [warnings] : []),
    ...(search ? [search] : []),
    charts.node,
    picker.node,
    ...(recovery ? [recovery] : []),
    ...(latency ? [latency] : []),
    runsPanel(job, result, runs),
    layers.node,
    environmentPanel(job, result),
  );
  await charts.draw();
  layers.draw();
  await picker.draw();
}
