"""A decoder's cross-entropy from its final hidden states, at the labelled positions only, a
chunk of rows at a time: the vocabulary logits of the whole batch never exist.

A decoder step's largest tensors are its logits: batch x positions x vocabulary, in fp32 for
the loss, then the same again for log-softmax and for their gradient. `logits_to_keep` already
cuts them to the label window (tasks/generation.py), but in a right-padded batch that window
still runs from the shortest prompt to the longest target: most of its positions are other
rows' prompts or padding. Here the LM head computes logits only at positions that predict a
label, `CHUNK_BYTES` of fp32 logits at a time, and the cross-entropy's gradient with respect
to the hidden states (and the head's weight, when it trains) is formed chunk by chunk during
the forward pass, as Liger Kernel's fused linear cross-entropy does: what the backward pass
keeps is one hidden-size vector per labelled token.

How: a forward pre-hook on the LM head (`get_output_embeddings()`, a plain `nn.Linear`, tied to
the input embeddings or not). While a `LossRequest` is active it computes the loss from the
hidden states the head is handed and passes the head zero positions, so the model returns
empty logits. The model is still called through every wrapper (Accelerate's autocast, DDP,
peft), so mixed precision and gradient synchronisation are those of `model(**batch)`; outside
a request the hook does nothing. Models whose logits are changed after the head (Gemma 2's
soft-capping), heads wrapped by a method (LoRA or `modules_to_save` on the head), prompt
learning (virtual tokens shift the positions) and sharded runs (FSDP, DeepSpeed) keep the
model's own loss.
"""

from __future__ import annotations

import contextvars
from dataclasses import dataclass
from typing import TYPE_CHECKING

from finetune.tasks.padding import IGNORE, unwrap_parallel

if TYPE_CHECKING:  # pragma: no cover
    from collections.abc import Mapping

    import torch

    from finetune.tasks.padding import Generator
    from finetune.types import Accelerator, Batch, Model, Tensor

# fp32 logits computed at once: 64 MiB is 341 rows of a 49,152-token vocabulary
CHUNK_BYTES = 64 * 2**20
HOOKED = "_finetune_loss_hook"  # set on a head once its hook is registered
# logits the model post-processes after its head: the loss here would not see that
LOGIT_CHANGES = ("final_logit_softcapping", "logit_scale", "logits_scaling")
SHARDED = ("FSDP", "DEEPSPEED", "MEGATRON_LM")


@dataclass
class LossRequest:
    """What the head computes instead of logits: `targets[b, j]` is the token position j of
    the head's input predicts (IGNORE: none). Mean over every target, or one mean per row."""

    targets: torch.Tensor
    per_example: bool = False
    chunk_rows: int | None = None
    loss: torch.Tensor | None = None


_ACTIVE: contextvars.ContextVar[LossRequest | None] = contextvars.ContextVar(
    "finetune_loss_request", default=None
)


def loss_head(model: object) -> torch.nn.Linear | None:
    """The decoder's plain `nn.Linear` LM head when the loss may be computed here, else None."""
    import torch

    from finetune.methods.wrapped import transformers_model

    base = transformers_model(model)
    config = getattr(base, "config", None)
    if config is None or any(getattr(config, key, None) for key in LOGIT_CHANGES):
        return None
    if getattr(getattr(model, "active_peft_config", None), "is_prompt_learning", False):
        return None
    get = getattr(base, "get_output_embeddings", None)
    head = get() if callable(get) else None
    return head if type(head) is torch.nn.Linear else None


def hooked_head(model: object) -> torch.nn.Linear | None:
    """`loss_head(model)` with the hook registered (once), or None."""
    head = loss_head(model)
    if head is not None and not getattr(head, HOOKED, False):
        head.register_forward_pre_hook(_compute_requested_loss)
        setattr(head, HOOKED, True)
    return head


def next_token_targets(labels: torch.Tensor) -> torch.Tensor:
    """Causal-LM labels as per-position targets: position j predicts label j + 1."""
    import torch

    tail = labels.new_full((labels.shape[0], 1), IGNORE)
    return torch.cat([labels[:, 1:], tail], dim=1)


def causal_training_loss(model: Model, batch: Batch, accelerator: Accelerator) -> Tensor:
    """`model(**batch).loss` of a decoder micro-batch, computed here when the model allows
    (same value; the logits of the whole batch never exist)."""
    sharded = str(getattr(accelerator, "distributed_type", "")).upper()
    labels = batch.get("labels")
    if labels is None or labels.dim() != 2 or any(kind in sharded for kind in SHARDED):
        return model(**batch).loss
    if hooked_head(accelerator.unwrap_model(model)) is None:
        return model(**batch).loss
    inputs = {key: value for key, value in batch.items() if key != "labels"}
    return requested_loss(model, inputs, LossRequest(next_token_targets(labels)))


def example_losses(
    model: Model | Generator, inputs: Mapping[str, object], targets: torch.Tensor
) -> list[float] | None:
    """Mean target-token cross-entropy of each row (`targets` as in `LossRequest`), or None
    when the model's own logits must be used (the caller's plain path)."""
    if hooked_head(unwrap_parallel(model)) is None:
        return None
    losses = requested_loss(model, inputs, LossRequest(targets, per_example=True))
    return [float(x) for x in losses.tolist()]


def requested_loss(
    model: Model | Generator, inputs: Mapping[str, object], request: LossRequest
) -> Tensor:
    """Call the model with `request` active; the hooked head fills in its loss."""
    token = _ACTIVE.set(request)
    try:
        model(**inputs)
    finally:
        _ACTIVE.reset(token)
    if request.loss is None:
        raise RuntimeError("the LM head was not called: no loss was computed")
    return request.loss


def _compute_requested_loss(
    head: torch.nn.Linear, args: tuple[Tensor, ...]
) -> tuple[Tensor, ...] | None:
    """Forward pre-hook of the head: the active request's loss, and zero positions for the
    head itself (so the model's logits are empty)."""
    request = _ACTIVE.get()
    if request is None or request.loss is not None:
        return None
    hidden = args[0]
    if tuple(hidden.shape[:-1]) != tuple(request.targets.shape):
        raise RuntimeError(
            f"LM head input {tuple(hidden.shape)} does not match the targets "
            f"{tuple(request.targets.shape)}"
        )
    request.loss = loss_from_hidden(head, hidden, request)
    return (hidden[:, :0],) + tuple(args[1:])


def loss_from_hidden(
    head: torch.nn.Linear, hidden: torch.Tensor, request: LossRequest
) -> torch.Tensor:
    """Cross-entropy of `head(hidden)` against the request's targets, chunk by chunk."""
    import torch

    from finetune.train.fused_ce import LinearCrossEntropy, compute_dtype, token_losses

    labelled = request.targets != IGNORE
    rows = hidden[labelled]  # (labelled tokens, hidden): only these need logits
    targets = request.targets[labelled]
    chunk = request.chunk_rows or max(1, CHUNK_BYTES // (4 * head.out_features))
    dtype = compute_dtype(hidden.device.type, head.weight.dtype)
    trains = torch.is_grad_enabled() and (rows.requires_grad or head.weight.requires_grad)
    if trains and not request.per_example:
        return LinearCrossEntropy.apply(rows, head.weight, head.bias, targets, chunk, dtype)
    with torch.no_grad() if not trains else torch.enable_grad():
        losses = token_losses(rows, head.weight, head.bias, targets, chunk, dtype)
    if not request.per_example:
        return losses.sum() / max(len(losses), 1)
    which = labelled.nonzero()[:, 0]
    sums = losses.new_zeros(labelled.shape[0]).index_add_(0, which, losses)
    return sums / labelled.sum(dim=1).clamp(min=1)
