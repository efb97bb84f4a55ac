"""The training verb: a set-up run through the loop, its final evaluation, the best weights
kept, and everything saved into the run directory.

The loop evaluates after epochs and every `train.eval_steps` but leaves the last step to this
module, which evaluates the final weights once, restores the best evaluation's weights when
they were better (`train.select_best`), and saves the adapter (or model), metrics, predictions,
curves and the model card. Every process runs this; only the main one writes.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from finetune.console import metric_items
from finetune.errors import RunStoppedError
from finetune.run.artifacts import save_run_artifacts, write_run_start
from finetune.run.curves import eval_history, write_curves
from finetune.run.files import append_jsonl
from finetune.run.layout import RunPaths
from finetune.run.resume import stopped_message
from finetune.run.trackers import log_record, start_trackers
from finetune.tasks.main_metric import main_metric
from finetune.train.compiled import eager, mark_warm
from finetune.train.device import device_metrics
from finetune.train.evaluation import EvalBatches, make_eval_loader, run_eval
from finetune.train.loop import LoopHooks, LoopOutputs, fit
from finetune.train.selection import Selection, best_rule, selection_enabled
from finetune.train.sharded import full_weights, gathered_state_dict
from finetune.train.signals import TrainingStopped, stop_on_signals
from finetune.types import JSONObject

if TYPE_CHECKING:  # pragma: no cover
    from finetune.recipe.schema import Recipe
    from finetune.setup.run_setup import RunSetup, TrainingParts
    from finetune.train.checkpoints import TrainState
    from finetune.types import Accelerator

log = logging.getLogger(__name__)

LOSS = ("loss", "samples")  # what an evaluation without generation computes

Metrics = JSONObject  # metrics.json and the eval records of log.jsonl


@dataclass
class StartPlan:
    """What the main process decided before any weight loads: the run's fingerprint, the
    checkpoint to resume from (shared with every process) and the command that resumes."""

    command: str
    base_dir: Path | None = None  # where the recipe's relative data paths are read from
    fingerprint: JSONObject = field(default_factory=dict)
    checkpoint: Path | None = None


@dataclass
class RunSummary:
    run_dir: Path
    metrics: Metrics
    trainable: int
    total: int
    seconds: float = 0.0


@dataclass
class _Evaluations:
    """The evaluations of one run: each one logged (log.jsonl, trackers, the console) and
    offered to best-weights selection, which may stop training (early stopping)."""

    setup: RunSetup
    out: Path
    loader: EvalBatches | None
    selection: Selection
    predict_each: bool  # generation tasks generate only when asked during training

    def run(self, predict: bool = True) -> tuple[Metrics, list[object] | None]:
        """An evaluation, with compiled blocks run eagerly (generation's shapes vary)."""
        parts, accelerator = _training(self.setup), _accelerator(self.setup)
        examples = parts.splits.eval or []
        if self.loader is None:
            raise ValueError("no eval data: the callers evaluate only with a loader")
        with eager(self.setup.model):
            return run_eval(
                self.setup.model,
                self.setup.task,
                self.loader,
                examples,
                accelerator,
                predict=predict,
            )

    def during_training(self, step: int, epoch: int) -> Metrics:
        if self.loader is None:
            return {"step": step}
        metrics, _ = self.run(predict=self.predict_each)
        return self.record(step, epoch, metrics)

    def record(self, step: int, epoch: int, metrics: Metrics) -> Metrics:
        record: Metrics = {"step": step, "epoch": epoch}
        record.update({f"eval_{k}": v for k, v in metrics.items()})
        accelerator = _accelerator(self.setup)
        if accelerator.is_main_process:
            append_jsonl(RunPaths(self.out).log, record)
            log.info("eval at step %d: %s", step, format_metrics(metrics))
        log_record(accelerator, record)
        return record

    def select(self, step: int, record: Metrics) -> bool:
        return self.selection.update(step, record, self.setup.model)


def train_and_save(setup: RunSetup, out: Path, plan: StartPlan, progress: bool) -> RunSummary:
    """Train the set-up run into `out` (resuming from `plan.checkpoint`), evaluate, save."""
    recipe, accelerator, parts = setup.recipe, _accelerator(setup), _training(setup)
    if accelerator.is_main_process:
        resume = plan.checkpoint is not None
        write_run_start(
            out,
            recipe,
            setup.run_info(),
            setup.task.tokenizer,
            setup.revision,
            resume,
            plan.base_dir,
        )
    start_trackers(accelerator, recipe, out)
    loader = (
        make_eval_loader(parts.eval_set, setup.task, recipe.eval.batch_size, accelerator)
        if parts.eval_set is not None
        else None
    )
    selection = make_selection(recipe, accelerator, has_eval=loader is not None)
    predict_each = not setup.task.is_generation or recipe.eval.generate_during_training
    evaluations = _Evaluations(setup, out, loader, selection, predict_each)
    state = _fit(setup, evaluations, plan, progress)
    if accelerator.is_main_process and parts.compiled is not None:
        mark_warm(parts.compiled)  # the next run of this model finds its graphs cached
    metrics, predictions = _final_evaluation(evaluations, state)
    metrics = {**metrics, **_training_metrics(state, recipe, accelerator)}
    if accelerator.is_main_process:
        paths = RunPaths(out)
        if loader is not None:
            metrics["eval_history"] = eval_history(paths.log)  # also the evals before a resume
        kept = selection.best_step if selection.keep_weights else None
        write_curves(paths.log, paths.curves, main_metric(recipe.task), kept)
    _save(setup, out, metrics, predictions)
    return RunSummary(out, metrics, setup.parameters.trainable, setup.parameters.total)


def _fit(setup: RunSetup, evaluations: _Evaluations, plan: StartPlan, progress: bool) -> TrainState:
    """The loop, stopped cleanly (checkpoint + the --resume command) by SIGTERM / Ctrl-C."""
    parts, paths = _training(setup), RunPaths(evaluations.out)
    if parts.optimization is None or parts.batches is None:
        raise ValueError(f"method {setup.method.name} trains nothing: see pipeline/zero_shot.py")
    hooks = LoopHooks(
        evaluate=evaluations.during_training,
        after_eval=evaluations.select if evaluations.selection.active else None,
        after_optimizer_step=method_step_hook(setup),
        forward=parts.forward,
    )
    outputs = LoopOutputs(paths.log, paths.checkpoints, progress, plan.fingerprint)
    with stop_on_signals() as stop:
        hooks.stop = stop
        try:
            return fit(
                setup.model,
                parts.optimization,
                parts.batches,
                setup.recipe.train,
                _accelerator(setup),
                hooks,
                outputs,
                plan.checkpoint,
            )
        except TrainingStopped as stopped:
            raise RunStoppedError(stopped_message(stopped, plan.command)) from None


def method_step_hook(setup: RunSetup) -> Callable[[int], None] | None:
    """The method's per-step work (Method.step_hook) on the model inside Accelerate's wrapper;
    a hook with state is checkpointed with the run (registered before the loop's scheduler)."""
    accelerator = _accelerator(setup)
    hook = setup.method.step_hook(accelerator.unwrap_model(setup.model))
    if hook is not None and hasattr(hook, "state_dict"):
        accelerator.register_for_checkpointing(hook)
    return hook


def _final_evaluation(
    evaluations: _Evaluations, state: TrainState
) -> tuple[Metrics, list[object] | None]:
    """The final weights evaluated once (the loop leaves the last step to us), then the best
    evaluation's weights restored and evaluated when they were better."""
    if evaluations.loader is None:
        return {}, None
    selection, step = evaluations.selection, state.global_step
    metrics, predictions = evaluations.run()
    # early stopping evaluated this step already: one record and one vote per step
    if state.last_eval_step != step:
        # log.jsonl's eval curve holds what every evaluation during training computes
        curve = (
            metrics if evaluations.predict_each else {k: metrics[k] for k in LOSS if k in metrics}
        )
        record = evaluations.record(step, state.last_epoch, curve)
        selection.update(step, record, evaluations.setup.model)
    if selection.best_step != step and selection.restore(evaluations.setup.model):
        log.info(
            "keeping the weights of step %s (best eval_%s %s)",
            selection.best_step,
            selection.rule.metric,
            selection.best_value,
        )
        metrics, predictions = evaluations.run()
    if selection.active:
        metrics.update(selection.summary(), stopped_early=state.stopped_early)
    return metrics, predictions


def _training_metrics(state: TrainState, recipe: Recipe, accelerator: Accelerator) -> Metrics:
    return {
        "train_loss": state.last_loss,
        "train_samples": state.samples,
        "train_seconds": round(state.train_seconds, 2),
        "train_samples_per_s": round(state.samples_per_second, 2),
        **device_metrics(accelerator, recipe.train.batch_size, recipe.train.grad_accum),
        "steps": state.global_step,
    }


def _save(setup: RunSetup, out: Path, metrics: Metrics, predictions: list[object] | None) -> None:
    """FSDP / ZeRO-3: every rank gathers the whole weights, then the main rank saves them."""
    accelerator = _accelerator(setup)
    model, method = setup.model, setup.method
    whole = gathered_state_dict(accelerator, model, trainable_only=not method.trains_backbone)
    with full_weights(accelerator, model):
        if accelerator.is_main_process:
            eval_examples = _training(setup).splits.eval
            unwrapped = accelerator.unwrap_model(model)
            save_run_artifacts(
                out,
                setup.recipe,
                setup.task,
                method,
                unwrapped,
                metrics,
                predictions,
                eval_examples,
                whole,
            )
            log.info("final: %s", format_metrics(metrics))
            log.info("run saved to %s", out)
    accelerator.wait_for_everyone()


def make_selection(recipe: Recipe, accelerator: Accelerator, has_eval: bool) -> Selection:
    """Best-weights selection and early stopping, saved in every checkpoint (so `--resume`
    keeps the best so far); inactive without eval data."""
    rule = best_rule(recipe)
    patience = recipe.train.early_stopping_patience if has_eval else None
    keep = has_eval and selection_enabled(recipe)
    selection = Selection(rule, keep, patience, recipe.train.early_stopping_min_delta)
    # registered before the loop's scheduler, on every run, so checkpoints always hold the same
    # objects in the same order
    accelerator.register_for_checkpointing(selection)
    if selection.active:
        log.info("best weights by eval_%s (%s; %s)", rule.metric, rule.mode, rule.why)
    return selection


def format_metrics(metrics: Metrics) -> str:
    return " ".join(f"{key}={shown}" for key, shown in metric_items(metrics))


def _training(setup: RunSetup) -> TrainingParts:
    if setup.training is None:
        raise ValueError("RunSetup.for_training builds the parts training needs")
    return setup.training


def _accelerator(setup: RunSetup) -> Accelerator:
    if setup.accelerator is None:
        raise ValueError("RunSetup.for_training gives the run its Accelerator")
    return setup.accelerator
