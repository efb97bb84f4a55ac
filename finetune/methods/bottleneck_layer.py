"""The bottleneck adapter module itself (imports torch, so it is loaded only when used)."""

from __future__ import annotations

import torch
from torch import nn

ACTIVATIONS: dict[str, type[nn.Module]] = {
    "relu": nn.ReLU,
    "gelu": nn.GELU,
    "swish": nn.SiLU,
    "tanh": nn.Tanh,
}


class BottleneckAdapter(nn.Module):
    """h + up(act(down(h))) (`forward`); `delta` is the branch alone, for Pfeiffer's post-LN
    placement where the residual is not the adapter's own input.

    `up` starts at zero, so the adapter is exactly the identity at initialisation and the
    adapted model starts as the base model; `down` starts small and random so that `up`
    receives a useful gradient from the first step (the same trick as LoRA's zero B).
    """

    def __init__(self, hidden: int, bottleneck: int, non_linearity: str = "relu") -> None:
        super().__init__()
        self.down = nn.Linear(hidden, bottleneck)
        self.act = ACTIVATIONS[non_linearity]()
        self.up = nn.Linear(bottleneck, hidden)
        nn.init.normal_(self.down.weight, std=0.02)
        nn.init.zeros_(self.down.bias)
        nn.init.zeros_(self.up.weight)
        nn.init.zeros_(self.up.bias)

    def delta(self, hidden_states: torch.Tensor) -> torch.Tensor:
        """up(act(down(h))), computed in the adapter's dtype, returned in the input's."""
        x = hidden_states.to(self.down.weight.dtype)
        return self.up(self.act(self.down(x))).to(hidden_states.dtype)

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        return hidden_states + self.delta(hidden_states)
