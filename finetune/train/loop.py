"""The one training loop, for every family, method and task.

AdamW + warm-up/decay schedule from transformers, explicit gradient accumulation weighted by
label tokens, clipping, length-grouped batches sharded by our own sampler, evaluation after
every epoch and every `eval_steps` (`hooks.after_eval` may stop there: early stopping),
atomic checkpoints every `save_steps` and at epoch ends,
exact resume (evaluation on its own random state, train/rng.py), and a stop with a checkpoint
at a step boundary on SIGTERM / Ctrl-C (train/signals.py). The final evaluation is the
pipeline's, so the loop skips the last step's. Tasks only supply batches and metrics;
methods only decide which parameters require grad.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

from finetune.errors import NonFiniteLossError
from finetune.models.lean_backward import lean_backward
from finetune.recipe.schema import TrainConfig
from finetune.run.files import append_jsonl
from finetune.run.trackers import log_record
from finetune.train.batching import LengthGroupedBatchSampler, TokenDataset
from finetune.train.checkpoints import (
    TrainState,
    latest_checkpoint,
    resume_weights,
    save_checkpoint,
)
from finetune.train.host_memory import return_freed_memory
from finetune.train.optim import build_scheduler, plan_steps
from finetune.train.progress import Progress
from finetune.train.rng import isolated_rng, private_generator
from finetune.train.signals import StopRequest, TrainingStopped
from finetune.train.step import accumulate_step, micro_batches

log = logging.getLogger(__name__)

# steps whose loss may wait on the device before it is read back (two scalars each); a read
# every few hundred steps costs nothing measurable
MAX_PENDING = 256


@dataclass
class LoopResult:
    global_step: int = 0
    epochs_done: int = 0
    train_seconds: float = 0.0
    samples: int = 0
    last_loss: float | None = None
    eval_history: list[dict[str, Any]] = field(default_factory=list)
    stopped_early: bool = False  # hooks.after_eval asked to stop (early stopping)

    @property
    def samples_per_second(self) -> float:
        return self.samples / self.train_seconds if self.train_seconds else 0.0


@dataclass
class LoopHooks:
    """What the loop calls out to; the pipeline binds them to the task and the run directory."""

    evaluate: Callable[[int, int], dict[str, Any]]
    log_path: Path | None = None
    checkpoint_dir: Path | None = None
    progress: bool = True
    # "causal" shifts labels by one when counting loss tokens; None: read it from the model
    model_kind: str | None = None
    # called with (step, eval record) after each evaluation; True stops training there. Fed
    # with gathered metrics, so every process returns the same answer at the same step.
    after_eval: Callable[[int, dict[str, Any]], bool] | None = None
    # SIGTERM / Ctrl-C: stop after the current step with a checkpoint (train/signals.py)
    stop: StopRequest | None = None
    # recorded in every checkpoint; --resume refuses a run that no longer matches it
    fingerprint: dict[str, Any] = field(default_factory=dict)


def _trainable(model: Any) -> list[Any]:
    return [p for p in model.parameters() if p.requires_grad]


def fit(
    model: Any,
    optimizer: Any,
    train_set: TokenDataset,
    collate: Callable[[list[dict[str, Any]]], dict[str, Any]],
    cfg: TrainConfig,
    accelerator: Any,
    hooks: LoopHooks,
    resume_from: Path | None = None,
) -> LoopResult:
    from torch.utils.data import DataLoader

    sampler = LengthGroupedBatchSampler(
        train_set.lengths,
        cfg.batch_size,
        cfg.seed,
        cfg.group_by_length,
        num_processes=accelerator.num_processes,
        process_index=accelerator.process_index,
    )
    # not prepared by Accelerate: the sampler shards itself (every example once per epoch)
    loader: Any = DataLoader(
        cast(Any, train_set),
        batch_sampler=sampler,
        collate_fn=collate,
        generator=private_generator(cfg.seed),
        pin_memory=getattr(accelerator.device, "type", "cpu") == "cuda",
    )
    _, total = plan_steps(len(sampler), cfg)
    scheduler = build_scheduler(optimizer, cfg, total)
    accelerator.register_for_checkpointing(scheduler)
    result = LoopResult()
    state = TrainState()
    if resume_from is not None:
        resume_weights(accelerator, model, resume_from)
        state = TrainState.read(resume_from)
        result.global_step, result.samples = state.global_step, state.samples
        result.train_seconds, result.last_loss = state.train_seconds, state.last_loss
        result.epochs_done = state.epoch
        log.info("resumed from %s (step %d)", resume_from, result.global_step)
    bar = Progress(accelerator, total, hooks.progress)
    bar.update(result.global_step, "")
    causal = _is_causal(hooks.model_kind, accelerator.unwrap_model(model))
    lean_backward(accelerator.unwrap_model(model))  # same numbers, less kept for backward
    loop = _Loop(
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
        total,
        causal,
        state.running_loss,
        state.running_tokens,
    )
    try:
        if state.eval_pending_epoch is not None:  # stopped before this step's evaluation
            loop.evaluate(state.eval_pending_epoch)
        loop.run(state.epoch, state.batches_in_epoch)
    finally:
        bar.close()
    return result


def _is_causal(kind: str | None, model: Any) -> bool:
    """Whether labels are shifted by one in the loss (decoder-only LMs)."""
    if kind is not None:
        return kind == "causal"
    return not getattr(getattr(model, "config", None), "is_encoder_decoder", False)


@dataclass
class _Pending:
    """One optimizer step whose loss (summed over label tokens) and [tokens, examples] are
    still on the device."""

    step: int
    lr: float
    loss_sum: Any
    totals: Any


@dataclass
class _Loop:
    """The epochs of one run: what is fixed for the run, plus the running loss between logs."""

    model: Any
    optimizer: Any
    scheduler: Any
    loader: Any
    sampler: LengthGroupedBatchSampler
    cfg: TrainConfig
    accelerator: Any
    hooks: LoopHooks
    result: LoopResult
    bar: Progress
    total: int
    causal: bool
    running_loss: float = 0.0
    running_tokens: float = 0.0
    started: float = 0.0
    params: list[Any] = field(default_factory=list)
    pending: list[_Pending] = field(default_factory=list)  # steps not yet read back
    bar_info: str = ""

    def settle(self) -> None:
        """Read the pending steps' losses and counts back in one transfer. A non-finite loss
        raises here, naming the step it appeared at; every log line, evaluation and checkpoint
        settles first, so none of them ever sees weights past that step."""
        if not self.pending:
            return
        import torch

        pending, self.pending = self.pending, []
        rows = torch.stack(
            [torch.cat([p.loss_sum.reshape(1).float(), p.totals.float()]) for p in pending]
        ).tolist()  # one device -> host copy for all of them
        for entry, (loss_sum, tokens, samples) in zip(pending, rows):
            if not math.isfinite(loss_sum):
                raise self.diverged(loss_sum / max(tokens, 1.0), entry.step, entry.lr)
            self.running_loss += loss_sum
            self.running_tokens += tokens
            self.result.samples += int(samples)

    def run(self, start_epoch: int, skip_batches: int) -> None:
        cfg, result = self.cfg, self.result
        self.params = _trainable(self.model)
        self.model.train()
        # a resumed run keeps counting from the seconds its checkpoint had trained
        self.started = time.perf_counter() - result.train_seconds
        last_epoch = cfg.epochs if not cfg.max_steps else 10**9
        if result.global_step >= self.total:  # resumed from a checkpoint of the last step
            return
        self.epochs(start_epoch, skip_batches, last_epoch)
        self.settle()  # the device's queued steps are part of the training time
        result.train_seconds = time.perf_counter() - self.started

    def epochs(self, start_epoch: int, skip_batches: int, last_epoch: int) -> None:
        cfg, result = self.cfg, self.result
        for epoch in range(start_epoch, last_epoch):
            self.sampler.current_epoch, self.sampler.skip = epoch, skip_batches
            batches_done, skip_batches = self.sampler.skip, 0
            windows = micro_batches(self.loader, cfg.grad_accum, self.accelerator.device)
            for window in windows:
                batches_done += len(window)
                self.step(window)
                epoch_end = batches_done >= len(self.sampler)
                self.stop_if_asked(epoch, batches_done, epoch_end)
                if result.global_step >= self.total:
                    break
                self.after_step(epoch, batches_done, epoch_end)
                if result.stopped_early:
                    break
            result.epochs_done = epoch + 1
            if result.global_step >= self.total or result.stopped_early:
                break

    def step(self, window: list[dict[str, Any]]) -> None:
        """One optimizer step, queued without waiting for the device: its loss and counts stay
        there until `settle` reads every pending step in one transfer (a host sync per step
        would leave a GPU idle while Python queues the next one)."""
        cfg, result = self.cfg, self.result
        loss_sum, totals = accumulate_step(self.model, window, self.accelerator, self.causal)
        if cfg.max_grad_norm:
            self.accelerator.clip_grad_norm_(self.params, cfg.max_grad_norm)
        used_lr = self.scheduler.get_last_lr()[0]
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        self.scheduler.step()
        return_freed_memory(self.accelerator.device)  # the next batch starts from the model
        result.global_step += 1
        result.train_seconds = time.perf_counter() - self.started
        self.pending.append(_Pending(result.global_step, used_lr, loss_sum, totals))
        if len(self.pending) >= MAX_PENDING:  # bounded device memory whatever logging_steps is
            self.settle()
        step = result.global_step
        lr = self.scheduler.get_last_lr()[0]
        if step % cfg.logging_steps == 0 or step == self.total:
            self.settle()
            result.train_seconds = time.perf_counter() - self.started
            result.last_loss = self.running_loss / max(self.running_tokens, 1.0)
            self.running_loss, self.running_tokens = 0.0, 0.0
            _log_step(self.hooks, self.accelerator, step, self.sampler.current_epoch, result, lr)
            self.bar_info = (
                f"loss {result.last_loss:.4f} lr {lr:.2e} {result.samples_per_second:.0f} samples/s"
            )
        self.bar.update(step, self.bar_info)

    def after_step(self, epoch: int, batches_done: int, epoch_end: bool) -> None:
        """Evaluate and checkpoint at most once per step (an epoch end may also be a multiple
        of eval_steps / save_steps); never at the last step, which the pipeline evaluates."""
        cfg, step = self.cfg, self.result.global_step
        if self.eval_due(epoch_end):
            self.evaluate(epoch)
        if epoch_end or (cfg.save_steps and step % cfg.save_steps == 0):
            self.checkpoint(epoch, batches_done, epoch_end)

    def eval_due(self, epoch_end: bool) -> bool:
        step, every = self.result.global_step, self.cfg.eval_steps
        return step < self.total and (epoch_end or bool(every and step % every == 0))

    def evaluate(self, epoch: int) -> None:
        """Under its own copy of the random state: whether and when evaluations run never
        changes a dropout mask of training (train/rng.py)."""
        self.settle()
        step = self.result.global_step
        with isolated_rng(self.accelerator.device):
            record = self.hooks.evaluate(step, epoch)
        self.result.eval_history.append(record)
        if self.hooks.after_eval is not None and self.hooks.after_eval(step, record):
            self.result.stopped_early = True
            log.info("early stopping at step %d", step)

    def checkpoint(
        self, epoch: int, batches_done: int, epoch_end: bool, eval_pending: bool = False
    ) -> Path | None:
        self.settle()
        result = self.result
        state = TrainState(
            global_step=result.global_step,
            epoch=epoch + 1 if epoch_end else epoch,
            batches_in_epoch=0 if epoch_end else batches_done,
            samples=result.samples,
            train_seconds=time.perf_counter() - self.started,
            running_loss=self.running_loss,
            running_tokens=self.running_tokens,
            last_loss=result.last_loss,
            eval_pending_epoch=epoch if eval_pending else None,
            fingerprint=self.hooks.fingerprint,
        )
        return save_checkpoint(
            self.accelerator, self.hooks.checkpoint_dir, state, self.cfg.keep_checkpoints
        )

    def stop_if_asked(self, epoch: int, batches_done: int, epoch_end: bool) -> None:
        """After a step, once any process got SIGTERM/SIGINT: checkpoint here (the step's
        evaluation, if one was due, is left to the resumed run) and raise TrainingStopped."""
        if self.hooks.stop is None:
            return
        name = self.hooks.stop.agreed(self.accelerator)
        if name is None:
            return
        path = self.checkpoint(epoch, batches_done, epoch_end, self.eval_due(epoch_end))
        raise TrainingStopped(name, self.result.global_step, self.total, path)

    def diverged(self, loss: float, step: int, lr: float) -> NonFiniteLossError:
        directory = self.hooks.checkpoint_dir
        last = latest_checkpoint(directory) if directory is not None else None
        kept = f"the last good checkpoint is {last}" if last else "no checkpoint was written yet"
        return NonFiniteLossError(
            f"training loss became {loss} at step {step} (lr {lr:.2e}); {kept}",
            fix="lower train.lr (try 10x lower), keep train.max_grad_norm on, prefer "
            "train.precision=bf16 or fp32 to fp16 (fp16 overflows), and check the data for "
            "garbled or empty targets; then rerun with --overwrite, or with --resume to continue "
            "from the last good checkpoint",
        )


def _log_step(hooks, accelerator, step, epoch, result, lr) -> None:
    if not accelerator.is_main_process or hooks.log_path is None:
        return
    record = {
        "step": step,
        "epoch": epoch,
        "loss": round(result.last_loss, 6),
        "lr": lr,
        "samples": result.samples,
        "samples_per_s": round(result.samples_per_second, 2),
        "elapsed_s": round(result.train_seconds, 2),
    }
    append_jsonl(hooks.log_path, record)
    log_record(accelerator, record)  # train.report_to trackers get the same numbers
