"""Keep less for the backward pass: dropout saves a bool mask instead of a float one (and
draws it faster), and gated MLPs recompute their activation instead of keeping it.

Measured on SmolLM2-135M (30 layers, batch 8 x 448 tokens, LoRA on q/v with dropout 0.05, fp32,
benchmarks/decoder_memory.py) the tensors a step keeps for backward were ~4.0 GB, of which:

- dropout: PyTorch's CPU dropout (`F.dropout` -> `_dropout_impl`) keeps its mask as a float
  tensor the size of the input (~0.46 GB for the LoRA dropouts here). The swapped dropout keeps
  a bool mask (a quarter of the bytes), and on CPU draws it from a counter-based hash seeded
  from torch's generator (models/fast_dropout.py): 8x faster than PyTorch's Mersenne Twister
  draw. Its masks are other draws from the same distribution, not PyTorch's.
- gated MLPs (`down_proj(act_fn(gate_proj(x)) * up_proj(x))`: Llama, Mistral, Qwen2/3, OLMo,
  Gemma): autograd keeps gate (for the activation's backward), act(gate) and up (for the
  product's): three intermediate-size tensors per layer, ~1.9 GB here. `GatedProduct` keeps
  gate and up and recomputes act(gate) in backward (~0.63 GB less, one elementwise pass more),
  with bit-for-bit the same numbers.

- attention dropout: models on `sdpa` attend with models/fast_attention.py's `finetune_sdpa`,
  whose CPU training path drops attention probabilities with the same hashed masks (and
  computes in the autocast dtype where sdpa's math path would upcast to float32).

The swaps are in memory only (module classes, forwards and the in-memory attention setting; no
parameter, state-dict key or saved config changes) and apply only where the code is exactly the
one they replace. The dropout swaps draw other masks from the same distribution; the gated-MLP
swap gives the same numbers.
"""

from __future__ import annotations

import functools
import inspect
import logging
import re
import types
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:  # pragma: no cover
    import torch

    from finetune.types import Model, Tensor

log = logging.getLogger(__name__)

# the one expression a gated MLP's forward must compute for GatedProduct to replace it
GATED_MLP = "self.down_proj(self.act_fn(self.gate_proj(x)) * self.up_proj(x))"


def lean_backward(model: Model) -> dict[str, int]:
    """Apply the swaps to `model` (a plain or peft-wrapped model); how many of each. The
    attention swap (models/fast_attention.py) draws sdpa's attention dropout the same way."""
    from finetune.models.fast_attention import use_finetune_sdpa

    counts = {
        "dropout": bool_mask_dropout(model),
        "attention": int(use_finetune_sdpa(model)),
        "gated_mlp": recompute_gated_mlp(model),
    }
    if any(counts.values()):
        log.debug("lean backward: %s", counts)
    return counts


# ---------------------------------------------------------------------- dropout


def _fast_dropout_forward(self: torch.nn.Dropout, x: Tensor) -> Tensor:
    from finetune.models.fast_dropout import applies, fast_dropout

    if applies(x, self.p, self.training):
        return fast_dropout(x, self.p)
    import torch

    return torch.nn.functional.dropout(x, self.p, self.training, self.inplace)


def bool_mask_dropout(model: Model) -> int:
    """Every `nn.Dropout` (exactly that class, not in place) draws a hashed mask and keeps it as
    bool on CPU (models/fast_dropout.py)."""
    import torch

    swapped = 0
    for module in model.modules():
        if type(module) is torch.nn.Dropout and not module.inplace and module.p > 0:
            module.forward = types.MethodType(_fast_dropout_forward, module)  # type: ignore[method-assign]
            swapped += 1
    return swapped


# ---------------------------------------------------------------------- gated MLPs


@functools.cache
def _gated_product() -> type[torch.autograd.Function]:
    """The autograd Function (built on first use: this module must not import torch)."""
    import torch

    class GatedProduct(torch.autograd.Function):
        """act(gate) * up, keeping gate and up only: act(gate) is recomputed in backward with
        the same operators, so the gradients are those autograd computes for the plain code."""

        @staticmethod
        def forward(
            ctx: Any,  # torch's FunctionCtx, which holds what backward needs as attributes
            gate: Tensor,
            up: Tensor,
            act: Callable[[Tensor], Tensor],
        ) -> Tensor:
            ctx.save_for_backward(gate, up)
            ctx.act = act
            return act(gate) * up

        @staticmethod
        def backward(ctx: Any, grad: Tensor) -> tuple[Tensor | None, Tensor | None, None]:
            gate, up = ctx.saved_tensors
            with torch.enable_grad():
                g = gate.detach().requires_grad_(ctx.needs_input_grad[0])
                activated = ctx.act(g)
            grad_up = grad * activated.detach() if ctx.needs_input_grad[1] else None
            grad_gate = None
            if ctx.needs_input_grad[0]:
                (grad_gate,) = torch.autograd.grad(activated, g, grad * up)
            return grad_gate, grad_up, None

    return GatedProduct


class GatedMLP(Protocol):
    """The parts of a gated MLP (Llama's, Qwen's, ...) that GATED_MLP names."""

    gate_proj: Callable[[Tensor], Tensor]
    up_proj: Callable[[Tensor], Tensor]
    down_proj: Callable[[Tensor], Tensor]
    act_fn: Callable[[Tensor], Tensor]


def _gated_mlp_forward(self: GatedMLP, x: Tensor) -> Tensor:
    import torch

    gate, up = self.gate_proj(x), self.up_proj(x)
    compiling = torch.compiler.is_compiling()  # inductor plans a compiled graph's memory itself
    if torch.is_grad_enabled() and (gate.requires_grad or up.requires_grad) and not compiling:
        return self.down_proj(_gated_product().apply(gate, up, self.act_fn))
    return self.down_proj(self.act_fn(gate) * up)


def is_gated_mlp(module: torch.nn.Module) -> bool:
    """Whether the module's class computes exactly GATED_MLP in its forward."""
    if not all(hasattr(module, n) for n in ("gate_proj", "up_proj", "down_proj", "act_fn")):
        return False
    try:
        source = inspect.getsource(type(module).forward)
    except (OSError, TypeError):
        return False
    body = [ln.strip() for ln in source.splitlines()[1:] if ln.strip()]
    return (
        len(body) == 2
        and re.sub(r"\s", "", body[0]) == "down_proj=" + GATED_MLP.replace(" ", "")
        and body[1] == "return down_proj"
    )


def recompute_gated_mlp(model: Model) -> int:
    """Gated MLPs keep gate and up for backward, not also act(gate)."""
    swapped = 0
    for module in model.modules():
        if "forward" not in vars(module) and is_gated_mlp(module):
            module.forward = types.MethodType(_gated_mlp_forward, module)
            swapped += 1
    return swapped
