"""Adapter arithmetic on LoRA runs (`finetune merge-adapters`): peft's `add_weighted_adapter`
on adapters loaded side by side, into one new adapter named `default`.

What the weights mean, per `--how`:

- `linear`, `ties`, `dare_ties`: peft combines the A and the B factors separately, each
  adapter's factors scaled by sqrt(weight x its alpha/r), so weights that sum to 1 would not
  give back an adapter merged with itself (0.5 + 0.5 doubles it). finetune passes peft the
  squared weights (sign kept), so that each factor is the weighted sum of the runs' scaled
  factors: an adapter merged with itself at 0.5 + 0.5 is that adapter. The merged update
  B·A then holds cross terms B_i·A_j: a cheap approximation at the runs' rank r (peft's docs
  say as much). TIES (Yadav et al. 2023) and DARE (Yu et al. 2024) first prune each factor to
  `density` (DARE at random, seeded).
- `cat`: the exact weighted sum of the runs' updates, Σ w_i·ΔW_i, at rank Σ r_i (the factors
  concatenated).

New modules (a classification head, bert2bert's cross-attention: peft's `modules_to_save`)
have no low-rank form; they are the weighted sum of the runs' trained copies (peft refuses to
merge adapters that each carry one). The merged adapter is a plain LoRA adapter (scaling 1,
rsLoRA's included), saved in peft's format.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, cast

from finetune.methods.wrapped import peft_model as as_peft

if TYPE_CHECKING:  # pragma: no cover
    from peft import LoraConfig
    from peft.utils import ModulesToSaveWrapper

    from finetune.types import Model, Tensor

HOWS = ("linear", "ties", "dare_ties", "cat")
FACTORED = ("linear", "ties", "dare_ties")  # need one rank r across the runs
MERGED = "default"
DARE_SEED = 0


def peft_weights(weights: list[float], how: str) -> list[float]:
    """The weights peft is given (module docstring): squared, sign kept, for the factored
    combinations; as they are for cat."""
    if how not in FACTORED:
        return list(weights)
    return [math.copysign(w * w, w) for w in weights]


def combine_lora(
    model: Model, names: list[str], weights: list[float], how: str, density: float
) -> int:
    """Add adapter `default` to `model` (a PeftModel holding `names`) and make it active;
    returns its rank."""
    import torch

    peft_model = as_peft(model)
    copies = weighted_copies(peft_model, names, weights)
    _drop_copies(peft_model, names)
    torch.manual_seed(DARE_SEED)  # DARE prunes at random
    peft_model.add_weighted_adapter(
        names,
        peft_weights(weights, how),
        MERGED,
        combination_type=how,
        density=density if how != "linear" and how != "cat" else None,
    )
    config = cast("LoraConfig", peft_model.peft_config[MERGED])  # LoRA's combined adapter
    config.init_lora_weights = True  # the merged weights are loaded, never initialised
    _plain_scaling(peft_model, config)
    _set_copies(peft_model, copies)
    peft_model.set_adapter(MERGED)
    return int(config.r)


def _wrappers(model: Model) -> list[ModulesToSaveWrapper]:
    from peft.utils import ModulesToSaveWrapper

    return [m for m in model.modules() if isinstance(m, ModulesToSaveWrapper)]


def weighted_copies(
    model: Model, names: list[str], weights: list[float]
) -> list[dict[str, Tensor]]:
    """Per modules_to_save wrapper, Σ w_i x (run i's trained copy), tensor by tensor."""
    out = []
    for wrapper in _wrappers(model):
        states = [wrapper.modules_to_save[n].state_dict() for n in names]
        out.append({key: sum(w * s[key] for w, s in zip(weights, states)) for key in states[0]})
    return out


def _drop_copies(model: Model, names: list[str]) -> None:
    """All but the active (first) run's copies: peft refuses adapters that each carry one, and
    re-activates the active adapter's copy while it adds the new adapter."""
    for wrapper in _wrappers(model):
        for name in names[1:]:
            if name in wrapper.modules_to_save:
                del wrapper.modules_to_save[name]


def _set_copies(model: Model, copies: list[dict[str, Tensor]]) -> None:
    for wrapper, state in zip(_wrappers(model), copies):
        wrapper.modules_to_save[MERGED].load_state_dict(state)


def _plain_scaling(model: Model, config: LoraConfig) -> None:
    """The combined factors carry every run's own scaling already: the new adapter must scale
    by 1, which peft's alpha = r gives LoRA but not rsLoRA (alpha / sqrt(r))."""
    from peft.tuners.lora import LoraLayer

    config.use_rslora = False
    config.lora_alpha = config.r
    for module in model.modules():
        if isinstance(module, LoraLayer) and MERGED in module.scaling:
            module.scaling[MERGED] = 1.0
