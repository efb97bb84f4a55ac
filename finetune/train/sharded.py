"""Whole weights for saving when the engine shards them (FSDP, DeepSpeed ZeRO-3).

Under FSDP and ZeRO-3 each process holds only a slice of every parameter, so a method's `save`
on the main process would write slices (or empty tensors). `full_weights` gathers them on every
process for the duration of the `with` block (all ranks must enter it: the gather is a
collective), so the methods save exactly as they do on one GPU and the adapter reloads with
`finetune eval` anywhere. DDP and single-process runs pass straight through.

`fsdp_wrap_blocks` picks the modules FSDP shards one by one before `prepare`: the model's
`_no_split_modules` without the ones that hold the input embeddings (BERT lists `BertEmbeddings`;
accelerate 1.15 wraps those first and then shards the word embeddings again on their own, which
fails in `fully_shard` with "Invariant encountered: value was None").

Verified where: the pass-through on CPU (tests); FSDP2 over gloo on a CPU with accelerate forced
into FSDP (tests/fsdp_on_cpu); FSDP and ZeRO-3 on GPUs by benchmarks/gpu_check.py (accelerate
1.15 itself turns FSDP on only for GPU-family backends: on a CPU an fsdp.yaml launch trains as
DDP over gloo, which `make_accelerator` logs).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import TYPE_CHECKING, cast

if TYPE_CHECKING:  # pragma: no cover
    from finetune.types import Accelerator, Model, StateDict


@contextlib.contextmanager
def full_weights(accelerator: Accelerator, model: Model) -> Iterator[None]:
    """Every parameter whole on every process inside the block (FSDP1, ZeRO-3); re-sharded
    after. Under FSDP2 only the root group is unsharded: the methods save from
    `gathered_state_dict`, and the root holds what a save may still run (a prompt encoder)."""
    kind = distributed_kind(accelerator)
    if kind == "FSDP":
        with _fsdp_full(accelerator, model):
            yield
    elif kind == "DEEPSPEED" and _zero_stage(accelerator) == 3:
        import deepspeed

        params = list(model.parameters())
        with deepspeed.zero.GatheredParameters(params, modifier_rank=None):
            yield
    else:
        yield


def gathered_state_dict(
    accelerator: Accelerator, model: Model, trainable_only: bool
) -> StateDict | None:
    """FSDP2: whole tensors on the CPU (a collective: every rank calls it), only the trainable
    ones for an adapter (a 7B base is never gathered to save a few MB of LoRA).

    FSDP2's own `state_dict()` hands out sharded DTensors, which `save_pretrained` (peft's and
    transformers') cannot write, so the methods save from this dict instead
    (`Method.save(..., state_dict)`). None elsewhere: the methods read the model itself.
    """
    if distributed_kind(accelerator) != "FSDP" or not getattr(accelerator, "is_fsdp2", False):
        return None
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

    options = StateDictOptions(
        full_state_dict=True, cpu_offload=True, ignore_frozen_params=trainable_only
    )
    # full_state_dict with cpu_offload: every value is a whole tensor, no DTensor shard
    return cast("StateDict", dict(get_model_state_dict(model, options=options)))


@contextlib.contextmanager
def _fsdp_full(accelerator: Accelerator, model: Model) -> Iterator[None]:
    if getattr(accelerator, "is_fsdp2", False):
        # the methods save from `gathered_state_dict`; peft's prompt learning still runs its
        # prompt encoder, whose weights sit in the root group: unshard that group alone
        from torch.distributed.fsdp import FSDPModule

        root = model if isinstance(model, FSDPModule) else None
        if root is not None:
            root.unshard()
        try:
            yield
        finally:
            if root is not None:
                root.reshard()
        return
    from torch.distributed.fsdp import FullyShardedDataParallel as FSDP

    with FSDP.summon_full_params(model, writeback=False, rank0_only=False):
        yield


def fsdp_wrap_blocks(accelerator: Accelerator, model: Model) -> list[str] | None:
    """Under FSDP with transformer-based wrapping and no classes named in the config: set the
    plugin's classes to the model's blocks, leaving out any that contain the input embeddings
    (those are sharded on their own); returns the names set, or None when nothing changed."""
    plugin = getattr(accelerator.state, "fsdp_plugin", None)
    if distributed_kind(accelerator) != "FSDP" or plugin is None:
        return None
    if plugin.transformer_cls_names_to_wrap:  # named in the config: the user's choice
        return None
    policy = getattr(plugin.auto_wrap_policy, "func", plugin.auto_wrap_policy)
    if getattr(policy, "__name__", "") != "transformer_auto_wrap_policy":
        return None
    embeddings = getattr(model, "get_input_embeddings", lambda: None)()
    holders = {
        type(module).__name__
        for module in model.modules()
        if embeddings is not None
        and module is not embeddings
        and any(m is embeddings for m in module.modules())
    }
    names = [n for n in getattr(model, "_no_split_modules", None) or [] if n not in holders]
    plugin.transformer_cls_names_to_wrap = names
    if embeddings is not None:
        _one_module_per_tied_embedding(model, embeddings)
    return names


def _one_module_per_tied_embedding(model: Model, embeddings: Model) -> None:
    """T5 holds its tied input embedding in three modules (`shared`, `encoder.embed_tokens`,
    `decoder.embed_tokens`) that share one weight; FSDP2 refuses a parameter seen by two of its
    groups, and accelerate shards `shared` on its own. Pointing the others at that very module
    keeps the computation and the tie and leaves FSDP one owner."""
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if (
                child is not embeddings
                and type(child) is type(embeddings)
                and getattr(child, "weight", None) is embeddings.weight
            ):
                setattr(parent, name, embeddings)


def distributed_kind(accelerator: Accelerator) -> str:
    """accelerate's distributed type as its name ("NO", "MULTI_GPU", "FSDP", "DEEPSPEED", ...)."""
    return str(getattr(accelerator.distributed_type, "value", accelerator.distributed_type))


def _zero_stage(accelerator: Accelerator) -> int:
    plugin = getattr(accelerator.state, "deepspeed_plugin", None)
    return int(getattr(plugin, "zero_stage", 0) or 0)
