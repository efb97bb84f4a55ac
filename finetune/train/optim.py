"""AdamW with the decay rule, the new-modules learning rate, the warm-up/decay schedule, and
the step plan they share."""

from __future__ import annotations

import math
from typing import Any

from finetune.recipe.sections import TrainConfig

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


# A randomly initialised head learning at a backbone rate (full fine-tuning's 5e-5) barely
# moves in a short run: a 77-way intent head was still at eval loss 2.76 after 564 steps, and
# `compare` crowned LoRA by 20 points for it (issue #15). New modules therefore learn at
# `train.new_modules_lr`, by default at least this rate: on a 36-intent set, full fine-tuning
# at 5e-5 reached 0.26 / 0.28 / 0.32 accuracy with the head at 5e-5 / 1e-3 / 3e-3
# (benchmarks/new_modules_lr.py, benchmarks/results/new_modules_lr_quick.md).
NEW_MODULES_MIN_LR = 3e-3


def new_modules_lr(cfg: TrainConfig) -> float:
    """The rate of newly initialised modules: the recipe's, else max(train.lr, 3e-3)."""
    if cfg.new_modules_lr is not None:
        return cfg.new_modules_lr
    return max(_lr(cfg), NEW_MODULES_MIN_LR)


def param_groups(
    model: Any, cfg: TrainConfig, new_modules: list[str] | tuple[str, ...] = ()
) -> list[dict[str, Any]]:
    """decay / no-decay x backbone / new-module groups (empty groups dropped).

    New modules are matched by the run's `new_modules` (the loading report): a parameter is
    new when it lies inside one of them, which also covers peft's `modules_to_save` copies
    (`classifier.modules_to_save.default.weight` lies inside `classifier`)."""
    from finetune.methods.base import inside

    groups: dict[tuple[bool, bool], list[Any]] = {}
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        key = (inside(name, list(new_modules)), any(k in name for k in NO_DECAY))
        groups.setdefault(key, []).append(param)
    out = []
    for (new, no_decay), params in sorted(groups.items()):
        out.append(
            {
                "params": params,
                "weight_decay": 0.0 if no_decay else cfg.weight_decay,
                "lr": new_modules_lr(cfg) if new else _lr(cfg),
                "new_modules": new,  # AdamW keeps extra keys: the tests and logs read them
            }
        )
    return out


def build_optimizer(
    model: Any, cfg: TrainConfig, new_modules: list[str] | tuple[str, ...] = ()
) -> Any:
    import torch

    return torch.optim.AdamW(param_groups(model, cfg, new_modules), lr=_lr(cfg))


def _lr(cfg: TrainConfig) -> float:
    if cfg.lr is None:  # a programming error: `Recipe.resolved()` fills in the method's rate
        raise ValueError("train.lr is unresolved; build the optimizer from recipe.resolved()")
    return cfg.lr


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
