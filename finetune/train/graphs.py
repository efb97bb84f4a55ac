"""`train.cuda_graphs`: the whole training forward compiled, replayed as CUDA graphs on a GPU.

A small model's step on a fast GPU waits on the host: bert-base's forward and backward are a few
thousand kernel launches, each queued by Python (an H200 ran 0.4% of its bf16 peak). With
`torch.compile(mode="reduce-overhead")` inductor records each compiled graph's kernels once as
a CUDA graph and replays it with one launch. A graph holds one shape, so every batch is padded
on the device up to the smallest of a few length buckets (16, 32, 64, ... up to
`train.max_length`): a handful of graphs serve every batch instead of one per length. The pads
are masked (`attention_mask` 0) and a classifier reads no pad position, so the loss is the
unpadded batch's.

What is compiled is a function around the model, not the model: evaluation, generation, saving,
merging, checkpoints and `--resume` see the very modules they always do. Only classification
and regression batches are bucketed here (their labels are per row, not per token); other
tasks, several processes (DDP/FSDP hooks run inside the backward), k-bit bases and accumulated
gradients compile their blocks as `train.compile` does, and the log says why.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # pragma: no cover
    from finetune.types import Batch, Model, Tensor

SMALLEST_BUCKET = 16
Forward = Callable[["Batch"], "Tensor"]


def length_buckets(max_length: int) -> tuple[int, ...]:
    """16, 32, 64, ... doubling, then max_length itself: at most ~log2(max_length / 8) graphs
    per batch size, and no batch padded to more than twice its length (or max_length)."""
    buckets, width = [], SMALLEST_BUCKET
    while width < max_length:
        buckets.append(width)
        width *= 2
    buckets.append(max_length)
    return tuple(buckets)


def bucket_width(length: int, buckets: tuple[int, ...]) -> int:
    """The smallest bucket that holds `length` (a longer batch keeps its own width)."""
    return next((b for b in buckets if b >= length), length)


def pad_to_bucket(batch: Batch, buckets: tuple[int, ...], pad_id: int) -> Batch:
    """The batch's [rows, length] inputs right-padded to the bucket of its length, on the
    device it is on (a few small kernels, where the host copy would wait on the running step)."""
    import torch.nn.functional as F

    ids = batch["input_ids"]
    extra = bucket_width(ids.shape[1], buckets) - ids.shape[1]
    if extra == 0:
        return batch
    padded: Batch = {**batch, "input_ids": F.pad(ids, (0, extra), value=pad_id)}
    if "attention_mask" in batch:
        padded["attention_mask"] = F.pad(batch["attention_mask"], (0, extra), value=0)
    if "token_type_ids" in batch:  # padding: segment 0
        padded["token_type_ids"] = F.pad(batch["token_type_ids"], (0, extra), value=0)
    return padded


def why_not_graphs(
    task_kind: str, processes: int, quantized: bool, grad_accum: int = 1
) -> str | None:
    """The reason this run compiles its blocks instead (None: the forward can be graphed).
    Accumulated gradients are ruled out because a replay may reuse the memory of the previous
    micro-batch's gradient outputs, which accumulation still reads."""
    if task_kind not in ("classification", "regression"):
        return f"{task_kind} batches are not bucketed (classification and regression only)"
    if processes > 1:
        return f"{processes} processes: DDP/FSDP communicate inside the backward"
    if quantized:
        return "a k-bit base's dequantising kernels are not captured"
    if grad_accum > 1:
        return f"train.grad_accum is {grad_accum}: graphed steps take one micro-batch each"
    return None


def graphed_forward(model: Model, buckets: tuple[int, ...], pad_id: int, cuda: bool) -> Forward:
    """model(**batch).loss compiled whole with static shapes: CUDA graphs on a GPU, plain
    inductor code on a CPU (where there is nothing to record, but the same path runs)."""
    import torch

    # every bucket at the full batch size and at an epoch's shorter last batches must stay
    # compiled (dynamo's default limit is 8 shapes a function)
    limit = 4 * len(buckets) + 8
    for name in ("recompile_limit", "cache_size_limit"):
        if hasattr(torch._dynamo.config, name):
            setattr(torch._dynamo.config, name, max(getattr(torch._dynamo.config, name), limit))

    from finetune.models.memory import transformers_model

    config = transformers_model(model).config
    if getattr(config, "use_cache", None):  # a decoder classifier would fill a KV cache in
        config.use_cache = False  # every training forward, and dynamo guards on its layers

    def loss_of(batch: Batch) -> Tensor:
        return model(**batch).loss

    compiled = torch.compile(
        loss_of, mode="reduce-overhead" if cuda else "default", dynamic=False, fullgraph=False
    )

    def forward(batch: Batch) -> Tensor:
        if cuda:  # the previous step's graph outputs are no longer read: replay over them
            torch.compiler.cudagraph_mark_step_begin()
        return compiled(pad_to_bucket(batch, buckets, pad_id))

    return forward
