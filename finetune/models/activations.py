"""The tanh-approximate GELU as one fused operator instead of a chain of elementwise ones.

GPT-2 (and GPT-Neo, Phi, CodeGen, gated-GELU T5 checkpoints such as Flan-T5) compute `gelu_new`
in Python: tanh, pow, three multiplies and two adds, each a pass over the activations and, when
training, an intermediate kept for the backward pass. `F.gelu(approximate="tanh")` is the same
function (transformers' own `GELUTanh`, "equivalent to NewGELU and FastGELU but much faster") in
one kernel with a fused backward. The swap happens in memory only: config.json still names the
original activation, so saved, merged and pushed models are unchanged.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # pragma: no cover
    from finetune.types import Model

log = logging.getLogger(__name__)


def fuse_gelu(model: Model) -> int:
    """Replace every NewGELU / FastGELU module by GELUTanh; returns how many were replaced."""
    from transformers import activations

    slow = tuple(
        getattr(activations, name)
        for name in ("NewGELUActivation", "FastGELUActivation")
        if hasattr(activations, name)
    )
    fused = getattr(activations, "GELUTanh", None) or activations.PytorchGELUTanh
    swapped = 0
    for parent in model.modules():
        for name, child in list(parent.named_children()):
            if isinstance(child, slow):
                setattr(parent, name, fused())
                swapped += 1
    if swapped:
        log.debug("tanh GELU fused in %d modules", swapped)
    return swapped
