"""AdamW with the decay rule, the new-modules learning rate, the warm-up/decay schedule, and
the step plan they share: built together (`build_optimization`) and handed to the loop."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from finetune.recipe.sections import TrainConfig

if TYPE_CHECKING:  # pragma: no cover
    from finetune.types import Model, Optimizer, Scheduler

# Weight decay pulls toward zero, so it only suits weights that start there or near it (LoRA
# A/B, adapters, heads, the backbone's matrices). Biases and norms are the usual exceptions;
# parameters a method starts elsewhere (IA3 vectors at 1, DoRA magnitudes at ||W||) are named
# by the method itself (`Method.no_decay`): decaying them unlearns the identity.
NO_DECAY = ("bias", "LayerNorm.weight", "layer_norm.weight", "ln_", "norm")


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
    model: Model,
    cfg: TrainConfig,
    new_modules: list[str] | tuple[str, ...] = (),
    no_decay: tuple[str, ...] = (),
) -> list[dict[str, Any]]:
    """decay / no-decay x backbone / new-module groups (empty groups dropped).

    New modules are matched by the run's `new_modules` (the loading report): a parameter is
    new when it lies inside one of them, which also covers peft's `modules_to_save` copies
    (`classifier.modules_to_save.default.weight` lies inside `classifier`)."""
    from finetune.methods.base import inside

    groups: dict[tuple[bool, bool], list[tuple[str, Any]]] = {}
    skip = NO_DECAY + tuple(no_decay)
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        key = (inside(name, list(new_modules)), any(k in name for k in skip))
        groups.setdefault(key, []).append((name, param))
    out = []
    for (new, spared), named in sorted(groups.items()):
        out.append(
            {
                "params": [param for _, param in named],
                "names": [name for name, _ in named],  # LoRA+ / LoRA-FA split groups by name
                "weight_decay": 0.0 if spared else cfg.weight_decay,
                "lr": new_modules_lr(cfg) if new else _lr(cfg),
                "new_modules": new,  # AdamW keeps extra keys: the tests and logs read them
            }
        )
    return out


@dataclass
class Optimization:
    """The optimizer and its schedule, built together for a planned number of steps."""

    optimizer: Optimizer
    scheduler: Scheduler
    total_steps: int


def build_optimizer(
    model: Model,
    cfg: TrainConfig,
    new_modules: list[str] | tuple[str, ...] = (),
    no_decay: tuple[str, ...] = (),
    fused: bool = True,
) -> Optimizer:
    """`train.optimizer`: AdamW over the decay / new-module groups, or LoRA+ / LoRA-FA over
    the same groups (train/lora_optimizers.py). `fused` False leaves AdamW's kernel to torch
    (FSDP and DeepSpeed replace the parameters it was built on)."""
    from finetune.train.adamw import adamw

    groups = param_groups(model, cfg, new_modules, no_decay)
    if cfg.optimizer != "adamw":
        from finetune.train.lora_optimizers import build_lora_optimizer

        return build_lora_optimizer(model, groups, cfg, fused)
    return adamw(groups, _lr(cfg), fused)


def freeze_for_optimizer(model: Model, cfg: TrainConfig) -> None:
    """What the chosen optimizer never trains is frozen before parameters are counted:
    LoRA-FA keeps every A matrix at its initial value."""
    if cfg.optimizer == "lorafa":
        from finetune.train.lora_optimizers import freeze_lora_a

        freeze_lora_a(model)


def build_optimization(
    optimizer: Optimizer, cfg: TrainConfig, batches_per_process: int
) -> Optimization:
    """The schedule of `optimizer` over the run's planned steps (`plan_steps`)."""
    _, total = plan_steps(batches_per_process, cfg)
    return Optimization(optimizer, build_scheduler(optimizer, cfg, total), total)


def _lr(cfg: TrainConfig) -> float:
    if cfg.lr is None:  # a programming error: `Recipe.resolved()` fills in the method's rate
        raise ValueError("train.lr is unresolved; build the optimizer from recipe.resolved()")
    return cfg.lr


def plan_steps(batches_per_process: int, cfg: TrainConfig) -> tuple[int, int]:
    """(optimizer steps per epoch, total optimizer steps); the last window may be partial."""
    per_epoch = max(1, math.ceil(batches_per_process / cfg.grad_accum))
    total = cfg.max_steps or per_epoch * cfg.epochs
    return per_epoch, total


def build_scheduler(optimizer: Optimizer, cfg: TrainConfig, total_steps: int) -> Scheduler:
    from transformers import get_scheduler

    names = {"linear": "linear", "cosine": "cosine", "constant": "constant_with_warmup"}
    warmup = int(cfg.warmup_fraction * total_steps)
    return get_scheduler(names[cfg.scheduler], optimizer, warmup, total_steps)
