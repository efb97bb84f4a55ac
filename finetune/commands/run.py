"""`finetune run`: recipe -> checked data -> model + method -> training loop -> run directory."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from finetune.commands.build import (
    apply_method,
    count_parameters,
    load_base_and_method,
    load_splits,
    make_accelerator,
    make_task,
    train_features,
)
from finetune.commands.validate import check_recipe
from finetune.console import metric_items
from finetune.data.encoding import encode_features
from finetune.errors import FinetuneError, RecipeError, RunStoppedError
from finetune.methods.guards import check_trainable
from finetune.models.architectures import detect_family, resolve_name
from finetune.models.loading import load_tokenizer
from finetune.recipe.schema import Recipe
from finetune.run.artifacts import save_run_artifacts, write_run_start
from finetune.run.curves import eval_history, write_curves
from finetune.run.files import RunLock, claim_run_dir, clear_run
from finetune.run.fingerprint import run_fingerprint
from finetune.run.layout import RunPaths
from finetune.run.resume import choose_checkpoint, resume_command, stopped_message
from finetune.run.trackers import finish_trackers, log_record, start_trackers
from finetune.tasks.main_metric import main_metric
from finetune.train.checkpoints import keep_only_trainable
from finetune.train.device import device_metrics
from finetune.train.evaluation import make_eval_loader, run_eval
from finetune.train.loop import LoopHooks, fit
from finetune.train.optim import build_optimizer
from finetune.train.selection import Selection, best_rule, selection_enabled
from finetune.train.sharded import fsdp_wrap_blocks, full_weights, gathered_state_dict
from finetune.train.signals import TrainingStopped, stop_on_signals

log = logging.getLogger(__name__)

LOSS = ("loss", "samples")  # what an evaluation without generation computes


@dataclass
class RunSummary:
    run_dir: Path
    metrics: dict[str, Any]
    trainable: int
    total: int
    seconds: float
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass
class StartPlan:
    """What the main process decided before any weight loads: the run's fingerprint, the
    checkpoint to resume from (shared with every process) and the command that resumes."""

    command: str
    fingerprint: dict[str, Any] = field(default_factory=dict)
    checkpoint: Path | None = None


def output_dir(recipe: Recipe, recipe_path: Path) -> Path:
    return Path(recipe.output.dir) if recipe.output.dir else Path("runs") / recipe_path.stem


def load_checked(recipe_path: Path, overrides: list[str]) -> Recipe:
    recipe, problems = check_recipe(recipe_path, overrides)
    if problems or recipe is None:
        raise RecipeError(problems)
    return recipe.resolved()  # train.lr: null -> the method's default_lr, recorded as run


def run(
    recipe_path: Path,
    overrides: list[str] | None = None,
    overwrite: bool = False,
    resume: bool = False,
    progress: bool = True,
) -> RunSummary:
    started = time.perf_counter()
    recipe = load_checked(recipe_path, overrides or [])
    out = output_dir(recipe, recipe_path)
    accelerator = make_accelerator(recipe, out)
    lock = RunLock(out)
    refused: Exception | None = None
    n = accelerator.num_processes
    plan = StartPlan(resume_command(recipe_path, overrides or [], progress, n))
    if accelerator.is_main_process:
        try:
            lock = claim_run_dir(out, overwrite, resume)  # check, lock, re-check under the lock
            if overwrite and not resume:
                clear_run(out)
            plan.fingerprint = run_fingerprint(recipe, recipe_path.parent, n)
            if resume:  # verified and compared before any weight loads
                plan.checkpoint = choose_checkpoint(
                    out, plan.fingerprint, recipe.train.keep_checkpoints
                )
        except Exception as exc:  # shared below, then re-raised as it was on the main rank
            refused = exc
    # every rank raises the main rank's refusal; otherwise the others would wait forever
    refused = _share_refusal(accelerator, refused)
    if refused is not None:
        if accelerator.is_main_process:
            lock.release()
        raise refused
    plan.checkpoint = _from_main(accelerator, plan.checkpoint)
    try:
        summary = _run_locked(recipe, recipe_path, out, accelerator, plan, progress)
    finally:
        finish_trackers(accelerator, recipe)
        if accelerator.is_main_process:
            lock.release()
    summary.seconds = time.perf_counter() - started
    return summary


def _share_refusal(accelerator: Any, error: Exception | None) -> Exception | None:
    """The main rank's error (or None) on every rank: a FinetuneError is rebuilt from its
    class, message and fix (the same message and exit code everywhere), anything else becomes
    a RunDirError naming it; no rank is left waiting at a barrier."""
    if accelerator.num_processes == 1:
        return error
    from accelerate.utils import broadcast_object_list

    from finetune.errors import RunDirError

    payload: list[Any] = [None]
    if isinstance(error, FinetuneError):
        payload = [(type(error), error.message, error.fix)]
    elif error is not None:
        payload = [(RunDirError, f"main process failed: {type(error).__name__}: {error}", "")]
    broadcast_object_list(payload, from_process=0)
    if payload[0] is None:
        return None
    if error is not None:
        return error
    cls, message, fix = payload[0]
    return cls(message, fix=fix)


def _from_main(accelerator: Any, value: Any) -> Any:
    """The main process's value on every process."""
    if accelerator.num_processes == 1:
        return value
    from accelerate.utils import broadcast_object_list

    payload = [value]
    broadcast_object_list(payload, from_process=0)
    return payload[0]


def _run_locked(recipe, recipe_path, out, accelerator, plan, progress) -> RunSummary:
    from accelerate.utils import set_seed

    set_seed(recipe.train.seed)
    family = detect_family(recipe)
    task = make_task(recipe, family)
    splits = load_splits(task, recipe, recipe_path.parent, stream_train=True)
    resolved = resolve_name(recipe.model.name)
    task.tokenizer = load_tokenizer(resolved.path, recipe.model.revision)
    cache = recipe.data.cache
    train_set = train_features(task, splits, cache)
    eval_set = (
        encode_features(task, splits.eval, training=False, cache=cache) if splits.eval else None
    )
    loaded, method, ctx = load_base_and_method(recipe, family, task)
    task.initialise_head(loaded.model, loaded.new_modules, train_set)  # regression: mean bias
    model = apply_method(recipe, loaded, method, ctx)
    trainable, total = count_parameters(model)
    check_trainable(model, method, loaded.new_modules)
    log.info(
        "%s on %s (%s): trainable %s / %s parameters (%.3f%%); new modules trained: %s",
        method.name,
        recipe.model.name,
        family.name,
        f"{trainable:,}",
        f"{total:,}",
        100 * trainable / total,
        ", ".join(loaded.new_modules) or "none",
    )
    optimizer = build_optimizer(model, recipe.train, loaded.new_modules)
    blocks = fsdp_wrap_blocks(accelerator, model)
    if blocks is not None:
        log.info("FSDP shards each of: %s", ", ".join(blocks) or "the whole model as one unit")
    model, optimizer = accelerator.prepare(model, optimizer)
    if not method.trains_backbone:
        keep_only_trainable(accelerator, model)
    resume = plan.checkpoint is not None
    if accelerator.is_main_process:
        write_run_start(
            out, recipe, task, family, loaded, method, trainable, total, resume, recipe_path.parent
        )
    start_trackers(accelerator, recipe, out)
    eval_loader = (
        make_eval_loader(eval_set, task, recipe.eval.batch_size, accelerator) if eval_set else None
    )
    generate_each_eval = not task.is_generation or recipe.eval.generate_during_training

    def log_eval(step: int, epoch: int, metrics: dict[str, Any]) -> dict[str, Any]:
        record = {"step": step, "epoch": epoch, **{f"eval_{k}": v for k, v in metrics.items()}}
        if accelerator.is_main_process:
            from finetune.run.files import append_jsonl

            append_jsonl(RunPaths(out).log, record)
            log.info("eval at step %d: %s", step, _fmt(metrics))
        log_record(accelerator, record)
        return record

    def evaluate(step: int, epoch: int) -> dict[str, Any]:
        if eval_loader is None:
            return {"step": step}
        metrics, _ = run_eval(
            model, task, eval_loader, splits.eval or [], accelerator, predict=generate_each_eval
        )
        return log_eval(step, epoch, metrics)

    selection = make_selection(recipe, accelerator, has_eval=eval_loader is not None)
    hooks = LoopHooks(
        evaluate=evaluate,
        log_path=RunPaths(out).log,
        checkpoint_dir=RunPaths(out).checkpoints,
        progress=progress,
        model_kind=task.model_kind(),
        after_eval=(lambda step, record: selection.update(step, record, model))
        if selection.active
        else None,
        fingerprint=plan.fingerprint,
    )
    with stop_on_signals() as stop:
        hooks.stop = stop
        try:
            result = fit(
                model,
                optimizer,
                train_set,
                task.collate,
                recipe.train,
                accelerator,
                hooks,
                plan.checkpoint,
            )
        except TrainingStopped as stopped:
            raise RunStoppedError(stopped_message(stopped, plan.command)) from None
    metrics: dict[str, Any] = {}
    predictions = None
    if eval_loader is not None:  # the loop leaves the last step's evaluation to this one
        metrics, predictions = run_eval(model, task, eval_loader, splits.eval or [], accelerator)
        history = result.eval_history
        # early stopping evaluated this step already: one record and one vote per step
        if not (history and history[-1].get("step") == result.global_step):
            # log.jsonl's eval curve holds what every evaluation during training computes
            curve = metrics if generate_each_eval else {k: metrics[k] for k in metrics if k in LOSS}
            history.append(log_eval(result.global_step, max(result.epochs_done - 1, 0), curve))
            selection.update(result.global_step, history[-1], model)
        if selection.best_step != result.global_step and selection.restore(model):
            log.info(
                "keeping the weights of step %s (best eval_%s %s)",
                selection.best_step,
                selection.rule.metric,
                selection.best_value,
            )
            metrics, predictions = run_eval(
                model, task, eval_loader, splits.eval or [], accelerator
            )
        if selection.active:
            metrics.update(selection.summary(), stopped_early=result.stopped_early)
    metrics = {
        **metrics,
        "train_loss": result.last_loss,
        "train_samples": result.samples,
        "train_seconds": round(result.train_seconds, 2),
        "train_samples_per_s": round(result.samples_per_second, 2),
        **device_metrics(accelerator, recipe.train.batch_size, recipe.train.grad_accum),
        "steps": result.global_step,
    }
    if accelerator.is_main_process:
        paths = RunPaths(out)
        if eval_loader is not None:
            metrics["eval_history"] = eval_history(paths.log)  # also the evals before a resume
        kept = selection.best_step if selection.keep_weights else None
        write_curves(paths.log, paths.curves, main_metric(recipe), kept)
    # FSDP / ZeRO-3: every rank gathers the whole weights, then the main rank saves them
    whole = gathered_state_dict(accelerator, model, trainable_only=not method.trains_backbone)
    with full_weights(accelerator, model):
        if accelerator.is_main_process:
            unwrapped = accelerator.unwrap_model(model)
            save_run_artifacts(
                out,
                recipe,
                task,
                method,
                unwrapped,
                metrics,
                predictions,
                splits.eval,
                trainable,
                total,
                whole,
            )
            log.info("final: %s", _fmt(metrics))
            log.info("run saved to %s", out)
    accelerator.wait_for_everyone()
    return RunSummary(out, metrics, trainable, total, 0.0)


def make_selection(recipe: Recipe, accelerator: Any, has_eval: bool) -> Selection:
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


def _fmt(metrics: dict[str, Any]) -> str:
    return " ".join(f"{key}={shown}" for key, shown in metric_items(metrics))
