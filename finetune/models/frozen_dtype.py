"""Frozen linear weights stored in the autocast dtype: the same numbers, less work and memory.

Under bf16 (or fp16) autocast every `F.linear` / `addmm` casts its fp32 weight and bias to the
compute dtype on every call, and autograd keeps that cast copy for the backward pass. A frozen
weight never changes, so the cast is the same each time: storing the frozen weights of plain
`nn.Linear` and GPT-2's `Conv1D` in the compute dtype gives bit-for-bit the same products
(the cast is round-to-nearest either way) without the per-call copies, and halves those
weights' bytes. The trainable parameters (adapters, heads) stay fp32 masters, as autocast
expects. This is what users of peft do by hand (`dtype=torch.bfloat16` with fp32 adapters).

Left alone, so the numbers stay exactly the same:
- modules with any trainable parameter, and subclasses of `nn.Linear` (k-bit layers);
- a weight shared with an embedding (tied input/output embeddings): the lookup is not
  autocast and would change;
- methods that compute with the base weight themselves (DoRA's norm, OFT/BOFT/HRA's rotated
  weight): `Method.reads_base_weights`;
- FSDP, whose flattened units need one dtype.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # pragma: no cover
    import torch

    from finetune.types import Model

log = logging.getLogger(__name__)


def frozen_linears(model: Model) -> list[torch.nn.Module]:
    """The plain Linear / Conv1D modules of `model` that train nothing and share no weight
    with an embedding."""
    import torch
    from transformers.pytorch_utils import Conv1D

    tied = {
        id(p) for m in model.modules() if isinstance(m, torch.nn.Embedding) for p in m.parameters()
    }
    found = []
    for module in model.modules():
        if type(module) not in (torch.nn.Linear, Conv1D):
            continue
        params = list(module.parameters(recurse=False))
        if any(p.requires_grad or id(p) in tied for p in params):
            continue
        if all(p.dtype == torch.float32 for p in params):
            found.append(module)
    return found


def store_frozen_in(model: Model, dtype: torch.dtype) -> int:
    """Cast the frozen linear weights of `model` to `dtype` in place; how many modules."""
    modules = frozen_linears(model)
    for module in modules:
        module.to(dtype)
    if modules:
        log.debug("frozen linear weights stored in %s: %d modules", dtype, len(modules))
    return len(modules)
