"""A one-output head that computes in float32 under autocast (regression's score head).

Under bf16 autocast a Linear returns bf16, whose grid near STS-B's 0-5 scores is 1/64: every
prediction, the MSE and Pearson were computed on that grid (2.7 became 2.703125). The head is
a few hundred multiply-adds, so float32 costs nothing. Swapping the class keeps the module's
parameters and state-dict keys, so saved adapters and merged models stay ordinary transformers
checkpoints (loaded elsewhere, the head is a plain Linear again).
"""

from __future__ import annotations

import torch


class Float32Head(torch.nn.Linear):
    """A Linear whose product runs in float32 with autocast off."""

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        bias = None if self.bias is None else self.bias.float()
        with torch.autocast(input.device.type, enabled=False):
            return torch.nn.functional.linear(input.float(), self.weight.float(), bias)


def compute_single_outputs_in_float32(model: torch.nn.Module) -> list[str]:
    """Every plain one-output Linear of `model` becomes a Float32Head; their names."""
    names = []
    for name, module in model.named_modules():
        if type(module) is torch.nn.Linear and module.out_features == 1:
            module.__class__ = Float32Head
            names.append(name)
    return names
