"""The one training loop, for every family, method and task.

AdamW + warm-up/decay schedule from transformers, gradient accumulation through
`accelerator.accumulate`, clipping, length-grouped batches, evaluation after every epoch and
every `eval_steps`, atomic checkpoints every `save_steps` and at epoch ends, exact resume.
Tasks only supply batches and metrics; methods only decide which parameters require grad.
"""

from __future__ import annotations

import json
import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from finetune.recipe.schema import TrainConfig
from finetune.run.files import append_jsonl, atomic_dir, atomic_write_json
from finetune.train.batching import LengthGroupedBatchSampler, ListDataset

log = logging.getLogger(__name__)

NO_DECAY = ("bias", "LayerNorm.weight", "layer_norm.weight", "ln_", "norm")


@dataclass
class LoopResult:
    global_step: int = 0
    epochs_done: int = 0
    train_seconds: float = 0.0
    samples: int = 0
    last_loss: float | None = None
    eval_history: list[dict[str, Any]] = field(default_factory=list)

    @property
    def samples_per_second(self) -> float:
        return self.samples / self.train_seconds if self.train_seconds else 0.0


def build_optimizer(model: Any, cfg: TrainConfig) -> Any:
    import torch

    decay, no_decay = [], []
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        (no_decay if any(k in name for k in NO_DECAY) else decay).append(param)
    groups = [
        {"params": decay, "weight_decay": cfg.weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]
    return torch.optim.AdamW([g for g in groups if g["params"]], lr=cfg.lr)


def plan_steps(num_batches: int, cfg: TrainConfig, num_processes: int) -> tuple[int, int]:
    """(optimizer steps per epoch, total optimizer steps) for this process count."""
    per_process = math.ceil(num_batches / num_processes)
    per_epoch = max(1, math.ceil(per_process / cfg.grad_accum))
    total = cfg.max_steps or per_epoch * cfg.epochs
    return per_epoch, total


def build_scheduler(optimizer: Any, cfg: TrainConfig, total_steps: int) -> Any:
    from transformers import get_scheduler

    names = {"linear": "linear", "cosine": "cosine", "constant": "constant_with_warmup"}
    warmup = int(cfg.warmup_fraction * total_steps)
    return get_scheduler(names[cfg.scheduler], optimizer, warmup, total_steps)


class Progress:
    """rich progress bar on the main process: loss, lr, samples/s, ETA."""

    def __init__(self, accelerator: Any, total: int, enabled: bool = True) -> None:
        self.bar = None
        if not (enabled and accelerator.is_main_process):
            return
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            TextColumn,
            TimeElapsedColumn,
            TimeRemainingColumn,
        )
        from rich.progress import Progress as RichProgress

        from finetune.console import err_console

        self.bar = RichProgress(
            TextColumn("[bold]train"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[info]}"),
            TimeElapsedColumn(),
            TextColumn("ETA"),
            TimeRemainingColumn(),
            console=err_console(),
            transient=False,
        )
        self.task = self.bar.add_task("train", total=total, info="")
        self.bar.start()

    def update(self, step: int, info: str) -> None:
        if self.bar is not None:
            self.bar.update(self.task, completed=step, info=info)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.stop()


@dataclass
class LoopHooks:
    """What the loop calls out to; the pipeline binds them to the task and the run directory."""

    evaluate: Callable[[int, int], dict[str, Any]]
    log_path: Path | None = None
    checkpoint_dir: Path | None = None
    progress: bool = True


def _trainable(model: Any) -> list[Any]:
    return [p for p in model.parameters() if p.requires_grad]


def save_checkpoint(accelerator: Any, hooks: LoopHooks, state: dict[str, Any], keep: int) -> None:
    """Checkpoint into a temporary dir, then rename: a failed write never harms the last one."""
    if hooks.checkpoint_dir is None:
        return
    dest = hooks.checkpoint_dir / f"step-{state['global_step']:08d}"
    accelerator.wait_for_everyone()
    if accelerator.num_processes > 1:
        # every rank writes its RNG state; a shared temp dir needs a deterministic name
        dest_tmp = hooks.checkpoint_dir / f".tmp-{dest.name}"
        accelerator.save_state(str(dest_tmp))
        accelerator.wait_for_everyone()
        if accelerator.is_main_process:
            atomic_write_json(dest_tmp / "trainer_state.json", state)
            dest_tmp.replace(dest)
    else:
        with atomic_dir(dest) as tmp:
            accelerator.save_state(str(tmp))
            atomic_write_json(tmp / "trainer_state.json", state)
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        _prune_checkpoints(hooks.checkpoint_dir, keep)


def _prune_checkpoints(directory: Path, keep: int) -> None:
    import shutil

    done = sorted(p for p in directory.glob("step-*") if (p / "trainer_state.json").exists())
    for old in done[:-keep]:
        shutil.rmtree(old, ignore_errors=True)


def latest_checkpoint(directory: Path) -> Path | None:
    done = sorted(p for p in directory.glob("step-*") if (p / "trainer_state.json").exists())
    return done[-1] if done else None


def train_loop(
    model: Any,
    optimizer: Any,
    train_set: ListDataset,
    collate: Callable[[list[dict[str, Any]]], dict[str, Any]],
    cfg: TrainConfig,
    accelerator: Any,
    hooks: LoopHooks,
    resume_from: Path | None = None,
) -> LoopResult:
    from torch.utils.data import DataLoader

    sampler = LengthGroupedBatchSampler(
        train_set.lengths, cfg.batch_size, cfg.seed, cfg.group_by_length
    )
    loader = DataLoader(train_set, batch_sampler=sampler, collate_fn=collate)
    per_epoch, total = plan_steps(len(sampler), cfg, accelerator.num_processes)
    scheduler = build_scheduler(optimizer, cfg, total)
    loader = accelerator.prepare_data_loader(loader)
    accelerator.register_for_checkpointing(scheduler)
    result = LoopResult()
    start_epoch, skip_batches = 0, 0
    if resume_from is not None:
        accelerator.load_state(str(resume_from))
        state = json.loads((resume_from / "trainer_state.json").read_text())
        result.global_step = state["global_step"]
        start_epoch, skip_batches = state["epoch"], state["batches_in_epoch"]
        result.samples = state.get("samples", 0)
        log.info("resumed from %s (step %d)", resume_from, result.global_step)
    bar = Progress(accelerator, total, hooks.progress)
    bar.update(result.global_step, "")
    try:
        _epochs(
            model,
            optimizer,
            scheduler,
            loader,
            sampler,
            cfg,
            accelerator,
            hooks,
            result,
            bar,
            (start_epoch, skip_batches, per_epoch, total),
        )
    finally:
        bar.close()
    return result


def _epochs(
    model, optimizer, scheduler, loader, sampler, cfg, accelerator, hooks, result, bar, plan
) -> None:
    start_epoch, skip_batches, _per_epoch, total = plan
    params = _trainable(model)
    model.train()
    started = time.perf_counter()
    running, running_n = 0.0, 0
    for epoch in range(start_epoch, cfg.epochs if not cfg.max_steps else 10**9):
        sampler.current_epoch = epoch
        epoch_loader = loader
        if skip_batches:
            epoch_loader = accelerator.skip_first_batches(loader, skip_batches)
        batches_done = skip_batches
        skip_batches = 0
        for batch in epoch_loader:
            batch.pop("idx", None)
            with accelerator.accumulate(model):
                loss = model(**batch).loss
                accelerator.backward(loss)
                if accelerator.sync_gradients and cfg.max_grad_norm:
                    accelerator.clip_grad_norm_(params, cfg.max_grad_norm)
                optimizer.step()
                optimizer.zero_grad(set_to_none=True)
            batches_done += 1
            result.samples += batch["input_ids"].shape[0] * accelerator.num_processes
            running += float(loss.detach())
            running_n += 1
            if not accelerator.sync_gradients:
                continue
            scheduler.step()
            result.global_step += 1
            step = result.global_step
            result.train_seconds = time.perf_counter() - started
            if not math.isfinite(running / max(running_n, 1)):
                raise FloatingPointError(
                    f"training loss became {running / max(running_n, 1)} at step {step}; "
                    "lower train.lr or use train.precision=fp32"
                )
            if step % cfg.logging_steps == 0 or step == total:
                mean = _mean_across(accelerator, running, running_n)
                result.last_loss = mean
                running, running_n = 0.0, 0
                _log_step(hooks, accelerator, step, epoch, mean, scheduler, result)
            lr = scheduler.get_last_lr()[0]
            bar.update(
                step,
                f"loss {result.last_loss or float('nan'):.4f} lr {lr:.2e} "
                f"{result.samples_per_second:.0f} samples/s",
            )
            state = {
                "global_step": step,
                "epoch": epoch,
                "batches_in_epoch": batches_done,
                "samples": result.samples,
            }
            if cfg.eval_steps and step % cfg.eval_steps == 0 and step != total:
                result.eval_history.append(hooks.evaluate(step, epoch))
            if cfg.save_steps and step % cfg.save_steps == 0 and step != total:
                save_checkpoint(accelerator, hooks, state, cfg.keep_checkpoints)
            if step >= total:
                break
        result.epochs_done = epoch + 1
        result.train_seconds = time.perf_counter() - started
        result.eval_history.append(hooks.evaluate(result.global_step, epoch))
        if result.global_step >= total:
            break
        state = {
            "global_step": result.global_step,
            "epoch": epoch + 1,
            "batches_in_epoch": 0,
            "samples": result.samples,
        }
        save_checkpoint(accelerator, hooks, state, cfg.keep_checkpoints)
    result.train_seconds = time.perf_counter() - started


def _mean_across(accelerator: Any, total: float, count: int) -> float:
    import torch

    if accelerator.num_processes == 1:
        return total / max(count, 1)
    t = torch.tensor([total, float(count)], device=accelerator.device)
    t = accelerator.reduce(t, reduction="sum")
    return float(t[0] / max(float(t[1]), 1.0))


def _log_step(hooks, accelerator, step, epoch, loss, scheduler, result) -> None:
    if not accelerator.is_main_process or hooks.log_path is None:
        return
    append_jsonl(
        hooks.log_path,
        {
            "step": step,
            "epoch": epoch,
            "loss": round(loss, 6),
            "lr": scheduler.get_last_lr()[0],
            "samples": result.samples,
            "samples_per_s": round(result.samples_per_second, 2),
            "elapsed_s": round(result.train_seconds, 2),
        },
    )
