"""LoRA's optimizers (`train.optimizer`): LoRA+ and LoRA-FA, as peft.optimizers defines them,
over finetune's parameter groups.

- LoRA+ (Hayou et al. 2024): B learns faster than A, at lr x `loraplus_lr_ratio` (16 in the
  paper). The split is peft's `create_loraplus_optimizer`'s: `lora_B` and 1-D parameters take the
  faster rate. Unlike that function, finetune's groups are kept: new modules (the head) keep
  `train.new_modules_lr`, and the decay rule stays finetune's.
- LoRA-FA (Zhang et al. 2023): A stays frozen at its initial value and B's gradient is
  projected by (AᵀA)⁻¹ (peft's `LoraFAOptimizer`), which needs no activations for A. The
  optimizer is peft's class; its groups are finetune's, each LoRA layer's A and B side by side
  with the layer's scaling, as `create_lorafa_optimizer` lays them out.

`validate` allows either only for the methods that have LoRA's A/B matrices
(`Method.optimizers`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, cast

if TYPE_CHECKING:  # pragma: no cover
    from finetune.recipe.sections import TrainConfig
    from finetune.types import Model, Optimizer, Tensor

Group = dict[str, Any]


def build_lora_optimizer(
    model: Model, groups: list[Group], cfg: TrainConfig, fused: bool = True
) -> Optimizer:
    if cfg.optimizer == "loraplus":
        from finetune.train.adamw import adamw

        return adamw(loraplus_groups(groups, cfg.loraplus_lr_ratio), float(cfg.lr or 0.0), fused)
    return lorafa_optimizer(model, groups, cfg)


def faster_in_loraplus(name: str, param: Tensor) -> bool:
    """peft's LoRA+ rule: B matrices and 1-D parameters (biases, magnitudes) go faster."""
    return "lora_B" in name or param.ndim == 1


def loraplus_groups(groups: list[Group], ratio: float) -> list[Group]:
    """Each backbone group split into its A part (lr) and its B part (lr x ratio)."""
    out: list[Group] = []
    for group in groups:
        if group["new_modules"]:
            out.append(group)
            continue
        pairs = list(zip(group["names"], group["params"]))
        for faster in (False, True):
            named = [(n, p) for n, p in pairs if faster_in_loraplus(n, p) == faster]
            if named:
                out.append(
                    {
                        **group,
                        "params": [p for _, p in named],
                        "names": [n for n, _ in named],
                        "lr": group["lr"] * ratio if faster else group["lr"],
                        "loraplus_b": faster,
                    }
                )
    return out


def freeze_lora_a(model: Model) -> None:
    for name, param in model.named_parameters():
        if "lora_A" in name:
            param.requires_grad_(False)


def lorafa_optimizer(model: Model, groups: list[Group], cfg: TrainConfig) -> Optimizer:
    """peft's LoraFAOptimizer: one group with every LoRA layer's (frozen A, B) pair in order
    and its scaling; finetune's other groups (head, biases) as they are, which that optimizer
    updates as AdamW does."""
    from peft.optimizers.lorafa import LoraFAOptimizer

    lora_names, lora_params, scalings = [], [], []
    for name, param in model.named_parameters():
        if ".lora_A." in name or ".lora_B." in name:
            lora_names.append(name)
            lora_params.append(param)
            scalings.append(_scaling(model, name))
    rest: list[Group] = []
    for group in groups:
        kept = [(n, p) for n, p in zip(group["names"], group["params"]) if n not in lora_names]
        if kept:
            rest.append(
                {
                    **group,
                    "params": [p for _, p in kept],
                    "names": [n for n, _ in kept],
                    "scaling_factors": [None] * len(kept),
                }
            )
    lora: Group = {
        "params": lora_params,
        "names": lora_names,
        "scaling_factors": scalings,
        "lr": cfg.lr,
        "weight_decay": cfg.weight_decay,
        "new_modules": False,
    }
    optimizer: Optimizer = LoraFAOptimizer(cast(Any, [lora, *rest]), lr=float(cfg.lr or 0.0))
    return optimizer


def _scaling(model: Model, name: str) -> float:
    """The LoRA layer's alpha / r (or / sqrt(r)) for this parameter's adapter."""
    module_name, _, suffix = name.rpartition(".lora_")
    adapter = suffix.split(".")[1]
    module: Any = model.get_submodule(module_name)
    return float(module.scaling[adapter])
