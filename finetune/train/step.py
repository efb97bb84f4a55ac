"""One optimizer step's work: micro-batches onto the device and a backward weighted by label
tokens (the loop in `train/loop.py` decides when; this decides how)."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING

from finetune.train.batching import label_tokens
from finetune.train.chunked_loss import causal_training_loss

if TYPE_CHECKING:  # pragma: no cover
    import torch
    from torch.utils.data import DataLoader

    from finetune.types import Accelerator, Batch, Feature, Model, Tensor


def micro_batches(
    loader: DataLoader[Feature], size: int, device: torch.device
) -> Iterator[list[Batch]]:
    """This epoch's micro-batches, grouped by optimizer step (the last group may be shorter).
    On CUDA the loader pins its batches, so the copies queue behind the running step instead
    of waiting for it."""
    from accelerate.utils import send_to_device

    window: list[Batch] = []
    for batch in loader:
        batch.pop("idx", None)
        window.append(send_to_device(batch, device, non_blocking=bool(loader.pin_memory)))
        if len(window) == size:
            yield window
            window = []
    if window:
        yield window


def accumulate_step(
    model: Model,
    window: list[Batch],
    accelerator: Accelerator,
    causal: bool,
    forward: Callable[[Batch], Tensor] | None = None,
) -> tuple[Tensor, Tensor]:
    """Backward over one optimizer step's micro-batches, weighted by label tokens.

    A model's loss is the mean over its micro-batch's label tokens. Scaling it by
    (tokens in this micro-batch) / (tokens in the whole step on every process), times the
    process count that DDP's gradient average divides by, makes the step's gradient the
    per-token mean over all of it: a micro-batch of 300 target tokens weighs a fifth of one of
    1,500, and a partial last window is not divided by the full grad_accum (transformers'
    `num_items_in_batch`). `forward`, when given, computes a micro-batch's loss in place of
    the model's own (the compiled forward of train/graphs.py). Returns the step's summed
    token loss and its [tokens, examples], both over all processes.
    """
    import torch

    counts = [label_tokens(b["labels"], causal).sum().float() for b in window]
    # torch.full, not new_tensor: a host -> device copy would wait for the queued work
    examples = torch.full((), float(sum(b["labels"].shape[0] for b in window)),
                          device=counts[0].device)  # fmt: skip
    local = torch.stack([torch.stack(counts).sum(), examples])
    totals = _sum_across(accelerator, local)
    scale = accelerator.num_processes / totals[0].clamp(min=1.0)
    loss_sum = counts[0].new_zeros(())
    for i, batch in enumerate(window):
        last = i == len(window) - 1
        with contextlib.nullcontext() if last else accelerator.no_sync(model):
            if causal:
                loss = causal_training_loss(model, batch, accelerator)
            else:
                loss = forward(batch) if forward is not None else model(**batch).loss
            accelerator.backward(loss * (counts[i] * scale))
        loss_sum = loss_sum + loss.detach().float() * counts[i]
    return _sum_across(accelerator, loss_sum), totals


def _sum_across(accelerator: Accelerator, tensor: Tensor) -> Tensor:
    if accelerator.num_processes == 1:
        return tensor
    return accelerator.reduce(tensor, reduction="sum")
