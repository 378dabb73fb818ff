"""One trial of the search: plan → screen → distill → record.

:class:`Objective` is what ``study.optimize`` calls. It samples a plan (and dtype), reuses the result
of a finished trial of the same plan, screens the plan before any training (size from ``plan_cost``,
latency and memory from the untrained graph on the target) and ends it as infeasible when it is over
a budget; otherwise it distills the student from the teacher, reporting the validation score per
epoch to the pruner (an int8 plan whose fp32 twin was trained takes its weights, and a plan that changes
no layer is the teacher: ``Objective._trained_weights``). Constraint values go to Optuna
(``Trial.set_constraint``) and the trial's :class:`~edgeopt.pipeline.record.TrialRecord` into its user
attributes. The objective value is the
validation score less a tie-break worth at most :data:`TIE_BREAK` toward faster and smaller plans
(``"score"``), or (score, target latency) (``"pareto"``).
"""

from __future__ import annotations

import logging
import time
from typing import Any

import numpy as np

from edgeopt.pipeline import students
from edgeopt.pipeline.config import PROVENANCE_BYTES, CompileConfig
from edgeopt.pipeline.prepare import SearchInputs
from edgeopt.pipeline.record import CONSTRAINT_NAMES, Constraints, DType, Status, TrialRecord, records
from edgeopt.pipeline.screen import Screen
from edgeopt.pipeline.study import StudyHandle
from edgeopt.search import alternatives
from edgeopt.search.allocation import descent

log = logging.getLogger("edgeopt.compile")

# Validation scores of different plans often tie (students distilled from one teacher reproduce its
# predictions). The objective Optuna sees subtracts at most this much, in proportion to the plan's
# target p50 and size over their budgets, so that among plans of equal F1 the sampler moves toward
# faster and smaller ones; it is far below a single validation sample's weight, so F1 comes first.
TIE_BREAK = 0.002
INT8_SIZE = 0.25  # int8 weights take a quarter of the fp32 bytes


def screen_latency(m: Any) -> float:
    """The latency a trial's screen is judged by: the p50 of its untrained graph, not the budget's
    percentile. The screen runs 0.1 s: on a busy host its p95 is other work's (cnn1d at 1/3 of its dense
    p95, host load 2.4: 38 of 39 trials screened out by p95, among them uniform pruning that runs at
    0.6x the budget side by side; the screens of one plan read p50 0.017-0.030 ms). A plan whose p50 is
    over the budget cannot meet it at any percentile above the median, so no training is spent on it;
    the rest are trained, and the finalists' longer measurement decides the budget's percentile with
    its confidence bound and tail (:mod:`~edgeopt.pipeline.select`)."""
    return float(m.latency_p50_ms)


def tie_break(latency_p50_ms: float, scale_ms: float, size_bytes: float, scale_bytes: float) -> float:
    """Half for latency, half for size, each relative to its budget (or the baseline's), capped."""
    lat = min(1.0, max(0.0, latency_p50_ms / scale_ms))
    size = min(1.0, max(0.0, size_bytes / scale_bytes))
    return TIE_BREAK * 0.5 * (lat + size)


def find_repeat(study: Any, plan: dict[str, Any], dtype: DType) -> tuple[Any, TrialRecord] | None:
    """A finished trial (complete or pruned) of this study with the same plan and dtype, if any."""
    import optuna

    states = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)
    done = (Status.TRAINED, Status.PRUNED, Status.SCREENED_OUT)
    for t in study.get_trials(deepcopy=False, states=states):
        rec = TrialRecord.from_trial(t)
        if rec.plan == plan and rec.dtype == dtype and rec.repeat_of is None and rec.status in done:
            return t, rec
    return None


class Objective:
    """``study.optimize``'s callable: one trial, plan → screen → distill → record."""

    def __init__(self, inputs: SearchInputs, config: CompileConfig, study: Any, screen: Screen) -> None:
        self.inputs, self.config, self.study, self.screen = inputs, config, study, screen
        self.budget = inputs.target.budget

    def __call__(self, trial: Any) -> float | tuple[float, float]:
        import optuna

        seeded = alternatives.seeded(trial)  # an alternative's plan and dtype are fixed, not sampled
        plan, dtype = seeded or (self.inputs.strategy.plan(trial), self.inputs.space.sample_precision(trial))
        record = TrialRecord(number=trial.number, plan=plan, dtype=DType(dtype))
        try:
            # Not trained twice: a finished trial of the plan, else its claim in the storage (another
            # worker's running trial of it is waited for; edgeopt.pipeline.study).
            repeat = find_repeat(self.study, record.plan, record.dtype) or StudyHandle(self.study).claim_plan(
                trial, record.plan, record.dtype
            )
            if repeat is not None:
                return self._repeat(trial, record, *repeat)
            return self._run(trial, record)
        except optuna.TrialPruned:
            raise
        except Exception as exc:  # a failure inside one trial fails that trial; the search goes on
            record.status = Status.FAILED
            record.error = f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
            log.warning("trial %d failed: %s", trial.number, record.error)
            raise
        finally:
            record.save(trial)

    def _repeat(self, trial: Any, record: TrialRecord, frozen: Any, other: TrialRecord) -> float | tuple[float, ...]:
        """The same plan was already trained: take its result instead of training it again."""
        import optuna

        record.copy_result_of(other)
        (other.constraints or Constraints()).tell(trial)
        if frozen.state == optuna.trial.TrialState.PRUNED:
            raise optuna.TrialPruned(f"same plan as trial {other.number}, which was pruned")
        return frozen.values[0] if self.config.objective != "pareto" else tuple(frozen.values)

    def _run(self, trial: Any, record: TrialRecord) -> float | tuple[float, float]:
        from edgeopt.compiler.decompose import decompose, plan_cost

        inputs = self.inputs
        cost = plan_cost(inputs.teacher, record.plan, inputs.task.example_input)
        record.params, record.macs = int(cost.params), int(cost.macs)
        paper_size = cost.size_bytes * (INT8_SIZE if record.dtype is DType.INT8 else 1.0)
        on_paper = Constraints.measure(self.budget, size_bytes=paper_size)
        if on_paper.model_size > 0:
            # Over the size budget on paper: infeasible before anything is built, measured or trained.
            record.constraints, record.size_bytes = on_paper, int(cost.size_bytes)
            on_paper.tell(trial)
            return self._screened_out(record, 10 * inputs.latency_scale)
        t0 = time.perf_counter()
        student = decompose(inputs.teacher, record.plan, example_input=inputs.task.example_input)
        record.timings["decompose"] = time.perf_counter() - t0
        m = record.screen = self.screen.measure(student, record.plan, record.dtype.value, record.timings)
        record.size_bytes = m.size_bytes
        record.params = m.params if m.params is not None else record.params  # the file's count, not the estimate
        record.constraints = Constraints.measure(
            self.budget,
            latency_ms=screen_latency(m),
            peak_memory_mb=m.peak_memory_mb,
            size_bytes=m.size_bytes + PROVENANCE_BYTES,
        )
        record.constraints.tell(trial, CONSTRAINT_NAMES[:3])  # the quality constraint comes after training
        if not record.constraints.feasible:
            # Over budget before any training: infeasible, no epochs spent. The quality is unknown:
            # only the measured budgets count against the plan.
            trial.set_constraint("min_f1", 0.0)
            return self._screened_out(record, m.latency_ms)
        taken = self._trained_weights(record)
        if taken is None:
            self._distill(trial, record, student)
        else:
            record.weights_of, state = taken
            if state is not None:
                student.load_state_dict(state)
            log.info("trial %d takes the weights of %s: not trained again", trial.number, record.weights_of)
        record.val = self._score(record, student)
        alternatives.keep(trial, student, record.dtype.value, inputs.task, self.config.out)
        if students.keeps(self.config.out, self.config.search_only):  # the final fine-tune may go on from it
            students.keep(self.config.out, trial.number, record.plan, student)
        record.status = Status.TRAINED
        record.constraints = Constraints.measure(
            self.budget,
            latency_ms=screen_latency(m),
            peak_memory_mb=m.peak_memory_mb,
            size_bytes=m.size_bytes + PROVENANCE_BYTES,
            score=record.score,
        )
        trial.set_constraint("min_f1", record.constraints.min_f1)
        if self.config.objective == "pareto":
            return record.score, m.latency_ms
        return record.score - tie_break(m.latency_p50_ms, inputs.latency_scale, m.size_bytes, inputs.size_scale)

    def _screened_out(self, record: TrialRecord, pareto_latency: float) -> float | tuple[float, float]:
        record.status, record.val = Status.SCREENED_OUT, {}
        return (0.0, pareto_latency) if self.config.objective == "pareto" else 0.0

    def _trained_weights(self, record: TrialRecord) -> tuple[str, dict[str, Any] | None] | None:
        """Weights this trial takes instead of training (their origin, and the state; None: the teacher's
        own), or None to train. Precision is post-training (torch builds every layer in fp32: the exported
        graph gets int8), so the int8 of a plan shares its fp32 twin's weights: the user's static int8 of a
        trained model. A plan that changes no layer is the teacher as it is, what the final fine-tune ships
        for it; an int8 plan takes the weights of a trained fp32 trial of the same plan that this run kept
        (``pipeline.students``). Training them again spent 107 s of a 420 s ResNet-8 search (one study of
        plans_stable at e59f040) on the ladder's int8 rungs and dense int8, and two trainings of one plan
        differed by their noise alone."""
        from edgeopt.compiler.formats import fp32_plan, int8_layers

        weights = fp32_plan(record.plan)
        if not weights:
            return "teacher", None
        if record.dtype is not DType.INT8 and not int8_layers(record.plan):
            return None
        for rec in records(self.study):
            twin = rec.status is Status.TRAINED and rec.dtype is DType.FP32 and rec.repeat_of is None
            if twin and not int8_layers(rec.plan) and fp32_plan(rec.plan) == weights:
                state = students.load(self.config.out, rec.number, rec.plan)
                if state is not None:
                    return f"trial {rec.number}", state
        return None

    def _distill(self, trial: Any, record: TrialRecord, student: Any) -> None:
        """Distill ``student`` for ``trial_epochs``, reporting its validation score per epoch (pruned on it)."""
        import optuna

        from edgeopt.pipeline.finetune import distill_student

        task, config = self.inputs.task, self.config
        # An alternative is trained whole (the report compares it), and so is a step down the tier's speed
        # (the pruner's early-epoch median cuts small students that learn slower: search/allocation/descent.py).
        prunable = alternatives.seeded(trial) is None and not descent.is_step(trial)

        def on_epoch(epoch: int, score: float) -> None:
            if config.objective != "pareto":  # Optuna's pruners are single-objective
                trial.report(score, epoch)
                if prunable and trial.should_prune():
                    record.status, record.val = Status.PRUNED, {"score": score}
                    trial.set_constraint("min_f1", Constraints.measure(self.budget, score=score).min_f1)
                    raise optuna.TrialPruned(f"pruned at epoch {epoch} with {task.metric_name} {score:.4f}")

        t0 = time.perf_counter()
        try:
            distill_student(student, self.inputs.teacher, task, config, config.trial_epochs, callback=on_epoch)
        finally:
            record.timings["distill"] = time.perf_counter() - t0

    def _score(self, record: TrialRecord, student: Any) -> dict[str, Any]:
        """The trained student's validation metrics, int8 scored on the quantized file (whole or per layer),
        and which validation samples it got right."""
        from edgeopt.compiler.formats import int8_layers
        from edgeopt.compiler.metrics import compute_metrics, pack_right
        from edgeopt.compiler.train import predict_labels
        from edgeopt.pipeline.evaluate import _metrics_dict, int8_predict

        task = self.inputs.task
        per_layer = record.plan if record.dtype is not DType.INT8 and int8_layers(record.plan) else None
        if record.dtype is DType.INT8 or per_layer:
            t0 = time.perf_counter()
            pred = int8_predict(student, task.example_input, task.X_train, task.X_val, per_layer)
            record.timings["export"] = record.timings.get("export", 0.0) + time.perf_counter() - t0
        else:
            pred = predict_labels(student, task.X_val)
        y = np.asarray(task.y_val)
        record.val_right = pack_right(np.asarray(pred) == y)  # selection's ties are paired (pipeline/ties.py)
        return _metrics_dict(compute_metrics(y, np.asarray(pred), task.metric))


__all__ = ["TIE_BREAK", "Objective", "find_repeat", "tie_break"]
