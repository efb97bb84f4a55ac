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
  autocast and would change (at inference the head gets its own copy instead);
- methods that compute with the base weight themselves outside autocast (DoRA's norm):
  `Method.reads_base_weights` (OFT, BOFT and HRA rotate it through autocast's matmuls: stored);
- in training, an adapter's own frozen layers (peft keeps them in ModuleDicts: LoRA-FA's
  frozen A matrices, which its optimizer multiplies outside autocast and the adapter saves);
- runs under FSDP (one dtype per flattened unit), DeepSpeed or on a k-bit base: the caller,
  setup/model.py's `store_frozen_weights`, decides when to store.

The same reasoning removes one copy per LoRA layer in training: `uncast_lora_inputs`. (All but
one of the copies of an input that several linear layers read: models/shared_cast.py, applied
after this by setup/model.py; it rounds gradients differently, so it is kept apart.)
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # pragma: no cover
    import torch

    from finetune.types import Model

log = logging.getLogger(__name__)


def frozen_linears(
    model: Model, adapters: bool = True
) -> tuple[list[torch.nn.Module], list[torch.nn.Module]]:
    """The plain Linear / Conv1D modules of `model` that train nothing: those that own their
    weights, and those whose weight is shared with an embedding (a tied output head).
    `adapters=False` leaves out layers held in a ModuleDict (a peft adapter's own layers)."""
    import torch
    from transformers.pytorch_utils import Conv1D

    embedded = {
        id(p) for m in model.modules() if isinstance(m, torch.nn.Embedding) for p in m.parameters()
    }
    held = (
        set()
        if adapters
        else {
            id(child)
            for m in model.modules()
            if isinstance(m, torch.nn.ModuleDict)
            for child in m.values()
        }
    )
    own: list[torch.nn.Module] = []
    tied: list[torch.nn.Module] = []
    for module in model.modules():
        if type(module) not in (torch.nn.Linear, Conv1D) or id(module) in held:
            continue
        params = list(module.parameters(recurse=False))
        if any(p.requires_grad for p in params) or any(p.dtype != torch.float32 for p in params):
            continue
        (tied if any(id(p) in embedded for p in params) else own).append(module)
    return own, tied


def store_frozen_in(model: Model, dtype: torch.dtype, inference: bool = False) -> int:
    """Cast the frozen linear weights of `model` to `dtype` in place; how many modules.

    `inference` (nothing is saved or trained after it): adapters' layers too, and a tied output
    head gets its own copy in `dtype` while the embedding stays fp32: the head is the largest
    matrix of a small decoder (a third of SmolLM2-135M), cast at every generated token
    otherwise."""
    import torch

    own, tied = frozen_linears(model, adapters=inference)
    for module in own:
        module.to(dtype)
    if inference:
        for module in tied:
            for name, param in list(module.named_parameters(recurse=False)):
                copy = torch.nn.Parameter(param.detach().to(dtype), requires_grad=False)
                setattr(module, name, copy)
    stored = len(own) + (len(tied) if inference else 0)
    if not inference:  # at inference the adapters are stored in `dtype` too: no float32 cast
        uncast_lora_inputs(model)
    if stored:
        log.debug("frozen linear weights stored in %s: %d modules", dtype, stored)
    return stored


def uncast_lora_inputs(model: Model) -> int:
    """Stop peft casting a LoRA layer's input to its float32 A matrix; how many layers.

    Under autocast a layer whose input arrives in bf16 (an attention output projection, an FFN
    down projection) gets a float32 copy of that input from peft, which A's autocast matmul
    rounds straight back to the same bf16 values: a full-size copy each way, and its backward,
    for nothing (4.7% of an all-linear MiniLM step on a 2-core CPU). Only plain LoRA layers
    with no dropout: dropout in bf16 rounds differently from dropout in float32, and variants
    such as DoRA compute with the input themselves."""
    import torch
    from peft.tuners.lora.layer import Linear as LoraLinear

    count = 0
    for module in model.modules():
        if not isinstance(module, LoraLinear) or getattr(module, "lora_variant", None):
            continue
        if all(isinstance(d, torch.nn.Identity) for d in module.lora_dropout.values()):
            module.cast_input_dtype_enabled = False
            count += 1
    return count
