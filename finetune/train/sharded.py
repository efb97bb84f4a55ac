"""Whole weights for saving when the engine shards them (FSDP, DeepSpeed ZeRO-3).

Under FSDP and ZeRO-3 each process holds only a slice of every parameter, so a method's `save`
on the main process would write slices (or empty tensors). `full_weights` gathers them on every
process for the duration of the `with` block (all ranks must enter it: the gather is a
collective), so the methods save exactly as they do on one GPU and the adapter reloads with
`finetune eval` anywhere. DDP and single-process runs pass straight through.

Verified where: the pass-through on CPU (tests); FSDP and ZeRO-3 only on GPUs (accelerate 1.15
turns FSDP on only for GPU-family backends: on a CPU an fsdp.yaml launch trains as DDP over
gloo, which `make_accelerator` logs).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any


@contextlib.contextmanager
def full_weights(accelerator: Any, model: Any) -> Iterator[None]:
    """Every parameter whole on every process inside the block; re-sharded after."""
    kind = str(getattr(accelerator.distributed_type, "value", accelerator.distributed_type))
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


@contextlib.contextmanager
def _fsdp_full(accelerator: Any, model: Any) -> Iterator[None]:
    if getattr(accelerator, "is_fsdp2", False):
        from torch.distributed.fsdp import FSDPModule

        # unshard() all-gathers and swaps the registered parameters to whole tensors
        sharded = [m for m in model.modules() if isinstance(m, FSDPModule)]
        for module in sharded:
            module.unshard()
        try:
            yield
        finally:
            for module in sharded:
                module.reshard()
    else:
        from torch.distributed.fsdp import FullyShardedDataParallel as FSDP

        with FSDP.summon_full_params(model, writeback=False, rank0_only=False):
            yield


def _zero_stage(accelerator: Any) -> int:
    plugin = getattr(accelerator.state, "deepspeed_plugin", None)
    return int(getattr(plugin, "zero_stage", 0) or 0)
