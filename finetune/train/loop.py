"""The one training loop, for every family, method and task.

`fit` takes what setup built (the model, its optimizer and scheduler, the training batches) and
runs the epochs: explicit gradient accumulation weighted by label tokens, clipping, evaluation
after every epoch and every `eval_steps` (`hooks.after_eval` may stop there: early stopping),
atomic checkpoints every `save_steps` and at epoch ends, exact resume (evaluation on its own
random state, train/rng.py), and a stop with a checkpoint at a step boundary on SIGTERM /
Ctrl-C (train/signals.py). The final evaluation is the caller's, so the loop skips the last
step's. Where the run stands is one object, the `TrainState` a checkpoint holds. Tasks only
supply batches and metrics; methods only decide which parameters require grad.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING

from finetune.errors import NonFiniteLossError
from finetune.recipe.sections import TrainConfig
from finetune.run.files import append_jsonl
from finetune.run.trackers import log_record
from finetune.train.batching import TrainBatches
from finetune.train.checkpoints import (
    TrainState,
    latest_checkpoint,
    resume_weights,
    save_checkpoint,
)
from finetune.train.host_memory import return_freed_memory
from finetune.train.optim import Optimization, plan_steps
from finetune.train.progress import Progress
from finetune.train.rng import isolated_rng
from finetune.train.signals import StopRequest, TrainingStopped
from finetune.train.step import accumulate_step, micro_batches

if TYPE_CHECKING:  # pragma: no cover
    from finetune.types import JSON, Accelerator, Batch, JSONObject, Model, Tensor

log = logging.getLogger(__name__)

# steps whose loss may wait on the device before it is read back (two scalars each); a read
# every few hundred steps costs nothing measurable
MAX_PENDING = 256

EvalRecord = dict[str, "JSON"]  # an evaluation's log record: {"step": ..., metrics}


@dataclass
class LoopHooks:
    """What the loop calls out to; the caller binds them to the task and the run."""

    # (step, epoch) -> the evaluation's record (at least {"step": step})
    evaluate: Callable[[int, int], EvalRecord]
    # called with (step, eval record) after each evaluation; True stops training there. Fed
    # with gathered metrics, so every process returns the same answer at the same step.
    after_eval: Callable[[int, EvalRecord], bool] | None = None
    # SIGTERM / Ctrl-C: stop after the current step with a checkpoint (train/signals.py)
    stop: StopRequest | None = None
    # the method's work after each optimizer step, before the gradients are cleared, called
    # with the step's 1-based number (Method.step_hook: AdaLoRA's rank allocation)
    after_optimizer_step: Callable[[int], None] | None = None
    # a micro-batch's loss, when not model(**batch).loss: the forward compiled whole with
    # CUDA graphs (train/graphs.py)
    forward: Callable[[Batch], Tensor] | None = None


@dataclass
class LoopOutputs:
    """Where the loop writes (log lines, checkpoints, the progress bar) and what each
    checkpoint records about the run (its fingerprint: --resume refuses a changed run)."""

    log_path: Path | None = None
    checkpoint_dir: Path | None = None
    progress: bool = True
    fingerprint: JSONObject = field(default_factory=dict)


def fit(
    model: Model,
    optimization: Optimization,
    batches: TrainBatches,
    cfg: TrainConfig,
    accelerator: Accelerator,
    hooks: LoopHooks,
    outputs: LoopOutputs | None = None,
    resume_from: Path | None = None,
) -> TrainState:
    """Train until the planned step count (or early stopping); returns where it ended."""
    outputs = outputs or LoopOutputs()
    _, total = plan_steps(len(batches.sampler), cfg)
    accelerator.register_for_checkpointing(optimization.scheduler)
    state = TrainState(fingerprint=outputs.fingerprint)
    if resume_from is not None:
        resume_weights(accelerator, model, resume_from)
        state = replace(TrainState.read(resume_from), fingerprint=outputs.fingerprint)
        log.info("resumed from %s (step %d)", resume_from, state.global_step)
    bar = Progress(accelerator, total, outputs.progress)
    bar.update(state.global_step, "")
    loop = _Loop(model, optimization, batches, cfg, accelerator, hooks, outputs, state, bar, total)
    try:
        if state.eval_pending_epoch is not None:  # stopped before this step's evaluation
            loop.evaluate(state.eval_pending_epoch)
            state.eval_pending_epoch = None
        loop.run()
    finally:
        bar.close()
    return state


@dataclass
class _Pending:
    """One optimizer step whose loss (summed over label tokens) and [tokens, examples] are
    still on the device."""

    step: int
    lr: float
    loss_sum: Tensor
    totals: Tensor


@dataclass
class _Loop:
    """The epochs of one run: what is fixed for the run, and the one state it advances."""

    model: Model
    optimization: Optimization
    batches: TrainBatches
    cfg: TrainConfig
    accelerator: Accelerator
    hooks: LoopHooks
    outputs: LoopOutputs
    state: TrainState
    bar: Progress
    total: int
    started: float = 0.0
    params: list[Tensor] = field(default_factory=list)
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
            self.state.running_loss += loss_sum
            self.state.running_tokens += tokens
            self.state.samples += int(samples)

    def clock(self) -> None:
        self.state.train_seconds = time.perf_counter() - self.started

    def run(self) -> None:
        state = self.state
        self.params = [p for p in self.model.parameters() if p.requires_grad]
        self.model.train()
        # a resumed run keeps counting from the seconds its checkpoint had trained
        self.started = time.perf_counter() - state.train_seconds
        if state.global_step >= self.total:  # resumed from a checkpoint of the last step
            return
        last_epoch = self.cfg.epochs if not self.cfg.max_steps else 10**9
        for epoch in range(state.epoch, last_epoch):
            self.epoch(epoch)
            if state.global_step >= self.total or state.stopped_early:
                break
        self.settle()  # the device's queued steps are part of the training time
        self.clock()

    def epoch(self, epoch: int) -> None:
        """One epoch's steps (a resumed epoch skips the batches its checkpoint had trained)."""
        state, sampler = self.state, self.batches.sampler
        sampler.current_epoch, sampler.skip = epoch, state.batches_in_epoch
        state.epoch = epoch
        device = self.accelerator.device
        for window in micro_batches(self.batches.loader, self.cfg.grad_accum, device):
            state.batches_in_epoch += len(window)
            self.step(window)
            epoch_end = state.batches_in_epoch >= len(sampler)
            if epoch_end:  # where a checkpoint of this step continues: the next epoch
                state.epoch, state.batches_in_epoch = epoch + 1, 0
            self.stop_if_asked(epoch, epoch_end)
            if state.global_step >= self.total:
                break
            self.after_step(epoch, epoch_end)
            if state.stopped_early:
                break

    def step(self, window: list[Batch]) -> None:
        """One optimizer step, queued without waiting for the device: its loss and counts stay
        there until `settle` reads every pending step in one transfer (a host sync per step
        would leave a GPU idle while Python queues the next one)."""
        cfg, state = self.cfg, self.state
        optimizer, scheduler = self.optimization.optimizer, self.optimization.scheduler
        loss_sum, totals = accumulate_step(
            self.model, window, self.accelerator, self.batches.causal, self.hooks.forward
        )
        if cfg.max_grad_norm:
            self.accelerator.clip_grad_norm_(self.params, cfg.max_grad_norm)
        used_lr = float(scheduler.get_last_lr()[0])
        optimizer.step()
        if self.hooks.after_optimizer_step is not None:
            self.hooks.after_optimizer_step(state.global_step + 1)
        optimizer.zero_grad(set_to_none=True)
        scheduler.step()
        return_freed_memory(self.accelerator.device)  # the next batch starts from the model
        state.global_step += 1
        self.clock()
        self.pending.append(_Pending(state.global_step, used_lr, loss_sum, totals))
        if len(self.pending) >= MAX_PENDING:  # bounded device memory whatever logging_steps is
            self.settle()
        if state.global_step % cfg.logging_steps == 0 or state.global_step == self.total:
            self.log_step(float(scheduler.get_last_lr()[0]))
        self.bar.update(state.global_step, self.bar_info)

    def log_step(self, lr: float) -> None:
        """The mean loss per label token since the last log line, to log.jsonl and trackers."""
        state = self.state
        self.settle()
        self.clock()
        state.last_loss = state.running_loss / max(state.running_tokens, 1.0)
        state.running_loss, state.running_tokens = 0.0, 0.0
        self.bar_info = (
            f"loss {state.last_loss:.4f} lr {lr:.2e} {state.samples_per_second:.0f} samples/s"
        )
        if not self.accelerator.is_main_process or self.outputs.log_path is None:
            return
        record = {
            "step": state.global_step,
            "epoch": self.batches.sampler.current_epoch,
            "loss": round(state.last_loss, 6),
            "lr": lr,
            "samples": state.samples,
            "samples_per_s": round(state.samples_per_second, 2),
            "elapsed_s": round(state.train_seconds, 2),
        }
        append_jsonl(self.outputs.log_path, record)
        log_record(self.accelerator, record)  # train.report_to trackers get the same numbers

    def after_step(self, epoch: int, epoch_end: bool) -> None:
        """Evaluate and checkpoint at most once per step (an epoch end may also be a multiple
        of eval_steps / save_steps); never at the last step, which the caller evaluates."""
        cfg, step = self.cfg, self.state.global_step
        if self.eval_due(epoch_end):
            self.evaluate(epoch)
        if epoch_end or (cfg.save_steps and step % cfg.save_steps == 0):
            self.checkpoint()

    def eval_due(self, epoch_end: bool) -> bool:
        step, every = self.state.global_step, self.cfg.eval_steps
        return step < self.total and (epoch_end or bool(every and step % every == 0))

    def evaluate(self, epoch: int) -> None:
        """Under its own copy of the random state: whether and when evaluations run never
        changes a dropout mask of training (train/rng.py)."""
        self.settle()
        state = self.state
        with isolated_rng(self.accelerator.device):
            record = self.hooks.evaluate(state.global_step, epoch)
        state.last_eval_step = state.global_step
        if self.hooks.after_eval is not None and self.hooks.after_eval(state.global_step, record):
            state.stopped_early = True
            log.info("early stopping at step %d", state.global_step)

    def checkpoint(self, eval_pending_epoch: int | None = None) -> Path | None:
        self.settle()
        self.clock()
        snapshot = replace(self.state, eval_pending_epoch=eval_pending_epoch)
        return save_checkpoint(
            self.accelerator, self.outputs.checkpoint_dir, snapshot, self.cfg.keep_checkpoints
        )

    def stop_if_asked(self, epoch: int, epoch_end: bool) -> None:
        """After a step, once any process got SIGTERM/SIGINT: checkpoint here (the step's
        evaluation, if one was due, is left to the resumed run) and raise TrainingStopped."""
        if self.hooks.stop is None:
            return
        name = self.hooks.stop.agreed(self.accelerator)
        if name is None:
            return
        path = self.checkpoint(epoch if self.eval_due(epoch_end) else None)
        raise TrainingStopped(name, self.state.global_step, self.total, path)

    def diverged(self, loss: float, step: int, lr: float) -> NonFiniteLossError:
        directory = self.outputs.checkpoint_dir
        last = latest_checkpoint(directory) if directory is not None else None
        kept = f"the last good checkpoint is {last}" if last else "no checkpoint was written yet"
        return NonFiniteLossError(
            f"training loss became {loss} at step {step} (lr {lr:.2e}); {kept}",
            fix="lower train.lr (try 10x lower), keep train.max_grad_norm on, prefer "
            "train.precision=bf16 or fp32 to fp16 (fp16 overflows), and check the data for "
            "garbled or empty targets; then rerun with --overwrite, or with --resume to continue "
            "from the last good checkpoint",
        )
