"""`finetune run`: recipe -> checked data -> model + method -> training loop -> run directory."""

from __future__ import annotations

import logging
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from finetune.commands.build import (
    count_parameters,
    load_base_and_method,
    load_splits,
    make_accelerator,
    make_task,
)
from finetune.commands.validate import check_recipe
from finetune.errors import FinetuneError, RecipeError
from finetune.methods.guards import check_trainable
from finetune.models.architectures import detect_family, resolve_name
from finetune.models.loading import load_tokenizer
from finetune.recipe.schema import Recipe
from finetune.run.artifacts import save_run_artifacts, write_run_start
from finetune.run.files import RunLock, claim_run_dir, clear_run
from finetune.train.batching import ListDataset
from finetune.train.evaluation import make_eval_loader, run_eval
from finetune.train.loop import LoopHooks, build_optimizer, latest_checkpoint, train_loop

log = logging.getLogger(__name__)


@dataclass
class RunSummary:
    run_dir: Path
    metrics: dict[str, Any]
    trainable: int
    total: int
    seconds: float
    extra: dict[str, Any] = field(default_factory=dict)


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
    accelerator = make_accelerator(recipe)
    lock = RunLock(out)
    if accelerator.is_main_process:
        lock = claim_run_dir(out, overwrite, resume)  # check, lock, re-check under the lock
    try:
        if accelerator.is_main_process and overwrite and not resume:
            clear_run(out)
        accelerator.wait_for_everyone()
        summary = _run_locked(recipe, recipe_path, out, accelerator, resume, progress)
    finally:
        if accelerator.is_main_process:
            lock.release()
    summary.seconds = time.perf_counter() - started
    return summary


def _run_locked(recipe, recipe_path, out, accelerator, resume, progress) -> RunSummary:
    from accelerate.utils import set_seed

    set_seed(recipe.train.seed)
    family = detect_family(recipe)
    task = make_task(recipe, family)
    splits = load_splits(task, recipe, recipe_path.parent)
    resolved = resolve_name(recipe.model.name)
    task.tokenizer = load_tokenizer(resolved.path, recipe.model.revision)
    train_set = ListDataset(task.encode(splits.train, training=True))
    eval_set = ListDataset(task.encode(splits.eval, training=False)) if splits.eval else None
    loaded, method, ctx = load_base_and_method(recipe, family, task)
    model = method.apply(loaded.model, ctx)
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
    optimizer = build_optimizer(model, recipe.train)
    model, optimizer = accelerator.prepare(model, optimizer)
    if accelerator.is_main_process:
        write_run_start(
            out, recipe, task, family, loaded, method, trainable, total, resume, recipe_path.parent
        )
    eval_loader = (
        make_eval_loader(eval_set, task, recipe.eval.batch_size, accelerator) if eval_set else None
    )
    generate_each_eval = not task.is_generation or recipe.eval.generate_during_training

    def evaluate(step: int, epoch: int) -> dict[str, Any]:
        if eval_loader is None:
            return {"step": step}
        metrics, _ = run_eval(
            model, task, eval_loader, splits.eval, accelerator, predict=generate_each_eval
        )
        record = {"step": step, "epoch": epoch, **{f"eval_{k}": v for k, v in metrics.items()}}
        if accelerator.is_main_process:
            from finetune.run.files import append_jsonl

            append_jsonl(out / "log.jsonl", record)
            log.info("eval at step %d: %s", step, _fmt(metrics))
        return record

    hooks = LoopHooks(
        evaluate=evaluate,
        log_path=out / "log.jsonl",
        checkpoint_dir=out / "checkpoints",
        progress=progress,
    )
    resume_from = latest_checkpoint(out / "checkpoints") if resume else None
    if resume and resume_from is None:
        raise FinetuneError(
            f"{out}: --resume given but there is no checkpoint to resume from",
            fix="run without --resume",
        )
    result = train_loop(
        model, optimizer, train_set, task.collate, recipe.train, accelerator, hooks, resume_from
    )
    metrics: dict[str, Any] = {}
    predictions = None
    if eval_loader is not None:
        metrics, predictions = run_eval(model, task, eval_loader, splits.eval, accelerator)
    metrics = {
        **metrics,
        "train_loss": result.last_loss,
        "train_seconds": round(result.train_seconds, 2),
        "train_samples_per_s": round(result.samples_per_second, 2),
        "peak_memory_bytes": peak_memory_bytes(),
        "steps": result.global_step,
    }
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
        )
        log.info("final: %s", _fmt(metrics))
        log.info("run saved to %s", out)
    accelerator.wait_for_everyone()
    return RunSummary(out, metrics, trainable, total, 0.0)


def peak_memory_bytes() -> int:
    """Peak GPU memory allocated on a GPU, else this process's peak resident set size."""
    import resource

    import torch

    if torch.cuda.is_available():
        return int(torch.cuda.max_memory_allocated())
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(peak if sys.platform == "darwin" else peak * 1024)


def _fmt(metrics: dict[str, Any]) -> str:
    parts = []
    for key, value in metrics.items():
        if isinstance(value, float):
            parts.append(f"{key}={value:.4f}")
        elif isinstance(value, (int, str)):
            parts.append(f"{key}={value}")
    return " ".join(parts)
