"""AdamW with the decay rule, the warm-up/decay schedule, and the step plan they share."""

from __future__ import annotations

import math
from typing import Any

from finetune.recipe.schema import TrainConfig

# Weight decay pulls toward zero, so it only suits weights that start there or near it (LoRA
# A/B, adapters, heads, the backbone's matrices). Biases and norms are the usual exceptions;
# IA3 vectors start at 1 and DoRA magnitudes at ||W||: decaying them unlearns the identity.
NO_DECAY = (
    "bias",
    "LayerNorm.weight",
    "layer_norm.weight",
    "ln_",
    "norm",
    "ia3_l",
    "lora_magnitude_vector",
)


def build_optimizer(model: Any, cfg: TrainConfig) -> Any:
    import torch

    decay: list[Any] = []
    no_decay: list[Any] = []
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        (no_decay if any(k in name for k in NO_DECAY) else decay).append(param)
    groups = [
        {"params": decay, "weight_decay": cfg.weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]
    if cfg.lr is None:  # a programming error: `Recipe.resolved()` fills in the method's rate
        raise ValueError("train.lr is unresolved; build the optimizer from recipe.resolved()")
    return torch.optim.AdamW([g for g in groups if g["params"]], lr=cfg.lr)


def plan_steps(batches_per_process: int, cfg: TrainConfig) -> tuple[int, int]:
    """(optimizer steps per epoch, total optimizer steps); the last window may be partial."""
    per_epoch = max(1, math.ceil(batches_per_process / cfg.grad_accum))
    total = cfg.max_steps or per_epoch * cfg.epochs
    return per_epoch, total


def build_scheduler(optimizer: Any, cfg: TrainConfig, total_steps: int) -> Any:
    from transformers import get_scheduler

    names = {"linear": "linear", "cosine": "cosine", "constant": "constant_with_warmup"}
    warmup = int(cfg.warmup_fraction * total_steps)
    return get_scheduler(names[cfg.scheduler], optimizer, warmup, total_steps)
