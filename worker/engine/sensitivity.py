"""Per-layer sensitivity (``analysis: "sensitivity"`` on a target job) and the schedule built from it.

1. **Curves**: each prunable Conv2d (or, with ``sensitivity_unit: "block"``, each top-level block ``model.N``)
   is pruned alone (every other layer dense) to each level of
   ``sensitivity_levels`` with per-layer L1 magnitude pruning, and scored on the screening images (the first
   ``screen_images``, or the whole split without screening) against the dense model on the same images.
2. **Schedule**: ``search.greedy_moves`` orders per-layer moves by weights removed per modelled drop
   (additive drop model, each move costing at least the uniform answer's drop per weight); the length of
   the prefix is then searched like a target (``search.search_prefix``: bracketing, bisection, every probe
   a ``layer schedule`` evaluated on the whole split), so the schedule's drop is verified within budget.
3. **Comparison**: the verified schedule against the search's uniform answer, on the job's objective.

Cost: layers x levels evaluations on the screening images, plus a few on the whole split.
"""

from __future__ import annotations

import copy
from typing import Any

from torch.nn.utils import prune

from prunebench.contract import LayerSensitivity, RunResult, ScheduleProbe, SensitivityReport
from prunebench.worker.engine import pipeline, search
from prunebench.worker.engine.modules import conv_layers
from prunebench.worker.engine.pruning import prunable_layers
from prunebench.worker.engine.scoring import score
from prunebench.worker.engine.target import TargetRun, _metric, removes_more

SCHEDULE_NAME = "schedule"


def units(layers: list[str], unit: str) -> dict[str, list[str]]:
    """The units pruned one at a time: each Conv2d, or each top-level block (``model.N``: its Conv2d layers).

    A unit's name is also a ``layer_sparsities`` pattern matching exactly its layers."""
    if unit == "layer":
        return {name: [name] for name in layers}
    blocks: dict[str, list[str]] = {}
    for name in layers:
        blocks.setdefault(".".join(name.split(".")[:2]), []).append(name)
    return blocks


class Analysis:
    """The sensitivity analysis of one target job (after its search)."""

    def __init__(self, target_run: TargetRun, outcome: search.SearchOutcome) -> None:
        self.target_run, self.outcome = target_run, outcome
        self.job = target_run.job
        self.levels = list(self.job.request.sensitivity_levels)
        self.curves: list[search.LayerCurve] = []
        self.moves: list[search.Move] = []
        self.chosen = 0
        self.chosen_drop = 0.0
        self.schedule_run: RunResult | None = None
        self.schedule_probes: list[ScheduleProbe] = []
        self.units: dict[str, list[str]] = {}  # unit (a layer, or a block model.N) -> its prunable Conv2d names

    # -- curves -------------------------------------------------------------------------------------------

    def _layer_drop(self, name: str, level: float, index: int, total: int) -> float:
        probes = self.target_run.probes
        view = probes.view(f"sensitivity {index}/{total}: {name} at {level:g}", level, False)
        view.reporter.progress(pipeline._progress(view, "pruning", 0, 1))
        model = copy.deepcopy(self.job.dense)
        convs = conv_layers(model)
        for layer in self.units[name]:
            prune.l1_unstructured(convs[layer], name="weight", amount=level)  # each layer's own smallest weights
            prune.remove(convs[layer], "weight")
        model = pipeline._to_device(model, view)
        out = pipeline._evaluate(view, model, 0)
        metrics = score(out.detections, view.decoded.images, view.scorer, view.class_map)
        pipeline._check_stop(view.reporter)
        target = self.target_run.target
        dense = _metric(self.target_run.dense_screen, target)
        return target.drop(dense, metrics.map if target.metric == "map" else metrics.map50)

    def measure_curves(self) -> None:
        layers = prunable_layers(self.job.dense, list(self.job.request.exclude))
        convs = conv_layers(self.job.dense)
        self.units = units(layers, self.job.request.sensitivity_unit)
        total = len(self.units) * len(self.levels)
        self.target_run.probes.expected = self.target_run.probes.started + total + 4
        for i, (name, members) in enumerate(self.units.items()):
            drops = tuple(
                self._layer_drop(name, level, i * len(self.levels) + j + 1, total)
                for j, level in enumerate(self.levels)
            )
            weights = sum(convs[layer].weight.numel() for layer in members)
            self.curves.append(search.LayerCurve(name, weights, tuple(self.levels), drops))

    # -- the schedule ------------------------------------------------------------------------------------

    def _schedule_drop(self, count: int) -> float:
        by_unit = {c.name: 0.0 for c in self.curves} | search.schedule_after(self.moves, count)
        weights = sum(c.params for c in self.curves)
        nominal = sum(c.params * by_unit[c.name] for c in self.curves) / weights if weights else 0.0
        schedule = {layer: by_unit[unit] for unit, members in self.units.items() for layer in members}
        run = self.target_run.probes.run_schedule(f"{SCHEDULE_NAME} {count}", schedule, True, round(nominal, 6))
        drop = self.target_run.drop(run, True)
        passed = drop <= self.target_run.target.budget + search.EPS
        self.schedule_probes.append(ScheduleProbe(moves=count, sparsity=run.sparsity, drop=drop, passed=passed))
        return drop

    def run(self) -> None:
        self.measure_curves()
        budget = self.target_run.target.budget
        # The uniform answer's drop per unit of sparsity: what a weight costs on average (a floor, see greedy_moves).
        rate = budget / max(self.outcome.answer, self.job.request.resolution)
        self.moves = search.greedy_moves(self.curves, prior_rate=rate)
        self.chosen, self.chosen_drop = search.search_prefix(self.moves, budget, self._schedule_drop)
        if self.chosen:
            self.schedule_run = self.target_run.probes.runs[(f"{SCHEDULE_NAME} {self.chosen}", True)]
        self._drop_rejected()

    def _drop_rejected(self) -> None:
        """Only the verified schedule stays among the job's runs (rejected prefixes were steps to it)."""
        probes = self.target_run.probes
        for key in [k for k in probes.order if isinstance(k[0], str) and k[0] != f"{SCHEDULE_NAME} {self.chosen}"]:
            probes.order.remove(key)

    # -- the report --------------------------------------------------------------------------------------

    def report(self, runs: list[RunResult]) -> SensitivityReport:
        objective = self.job.request.objective
        uniform_run = runs[[id(r) for r in runs].index(id(self.target_run.probes.run(self.outcome.answer, True)))]
        uniform = self.target_run.objective(uniform_run)
        schedule = search.schedule_after(self.moves, self.chosen)
        fields: dict[str, Any] = {}
        beats = False
        if self.schedule_run is not None:
            value = self.target_run.objective(self.schedule_run)
            beats = removes_more(value, uniform, objective)
            fields = {
                "schedule_sparsity": self.schedule_run.sparsity,
                "schedule_drop": self.chosen_drop,
                "schedule_objective": value,
                "schedule_run": [id(r) for r in runs].index(id(self.schedule_run)),
            }
        return SensitivityReport(
            images=len(self.target_run.probes.images(False).images),
            levels=self.levels,
            layers=[
                LayerSensitivity(name=c.name, params=c.params, levels=list(c.levels), drops=list(c.drops))
                for c in self.curves
            ],
            schedule={c.name: schedule.get(c.name, 0.0) for c in self.curves} if self.chosen else {},
            uniform_objective=uniform,
            beats_uniform=beats,
            note=self._note(beats, uniform, fields.get("schedule_objective")),
            schedule_probes=list(self.schedule_probes),
            **fields,
        )

    def _note(self, beats: bool, uniform: float, value: float | None) -> str:
        objective = self.job.request.objective
        if value is None:
            return "no per-layer schedule met the budget on the whole split: it could not beat the uniform answer"
        comparison = "removes more than" if beats else "could not beat"
        return (
            f"the per-layer schedule ({objective} {value:.6g}, verified drop {self.chosen_drop:.4f}) {comparison} "
            f"the uniform answer ({objective} {uniform:.6g}) at the same budget"
        )
