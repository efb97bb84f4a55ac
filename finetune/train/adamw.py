"""torch's AdamW with the fused kernel wherever the parameters allow it (train/optim.py and
train/lora_optimizers.py build on it)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # pragma: no cover
    from finetune.types import Optimizer

FUSED_ON = ("cpu", "cuda")  # the devices whose parameters take torch's fused AdamW here


def adamw(groups: list[dict[str, Any]], lr: float, fused: bool = True) -> Optimizer:
    """torch's AdamW, fused wherever every parameter allows it.

    Without `fused` (or `foreach`) torch's AdamW on a CPU loops over the tensors, about ten
    small operations each: for LoRA r8 on SmolLM2-135M's 30 layers (121 tensors) that loop took
    4.5 ms a step on 2 cores, the fused kernel 0.8 ms (benchmarks/results/adamw_cpu.md). The
    Trainer's default (`adamw_torch_fused`) has been the fused one since torch 2.8. Sharded
    (DTensor) or offloaded parameters keep torch's own choice."""
    import torch

    params = [p for group in groups for p in group["params"]]
    fusable = (
        fused
        and bool(params)
        and all(
            type(p) is torch.nn.Parameter and p.is_floating_point() and p.device.type in FUSED_ON
            for p in params
        )
    )
    return torch.optim.AdamW(groups, lr=lr, fused=True if fusable else None)
