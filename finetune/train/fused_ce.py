"""Linear layer + cross-entropy in chunks of rows: the arithmetic behind train/chunked_loss.py.

`LinearCrossEntropy` returns the mean cross-entropy of `rows @ weight.T + bias` against
`targets` and forms its gradients while it goes (Liger Kernel's fused linear cross-entropy):
per chunk, the softmax minus the one-hot target, divided by the token count, times the weight
(and, when the weight trains, the chunk's rows into the weight's gradient). The backward pass
only scales those by the incoming gradient. Each chunk computes the logits the way the model's
head and transformers' loss do: in the autocast dtype where autocast is on (bf16 matrix
products), then cross-entropy in fp32.
"""

from __future__ import annotations

from typing import Any

import torch


def compute_dtype(device_type: str, weight_dtype: torch.dtype) -> torch.dtype:
    """The dtype the head's matrix product runs in: autocast's where it is on."""
    if torch.is_autocast_enabled(device_type):
        return torch.get_autocast_dtype(device_type)
    return weight_dtype


def _logits(rows: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    """fp32 logits of a chunk, from operands already in the compute dtype."""
    return torch.nn.functional.linear(rows, weight, bias).float()


def _operands(
    rows: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, dtype: torch.dtype
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """The weight and bias cast once (not once per chunk) and the rows, in `dtype`."""
    return rows.to(dtype), weight.to(dtype), None if bias is None else bias.to(dtype)


def token_losses(
    rows: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    targets: torch.Tensor,
    chunk: int,
    dtype: torch.dtype,
) -> torch.Tensor:
    """Per-row cross-entropy (fp32), `chunk` rows of logits at a time."""
    device = rows.device.type
    with torch.autocast(device, enabled=False):
        x, w, b = _operands(rows, weight, bias, dtype)
        parts = [
            torch.nn.functional.cross_entropy(
                _logits(x[i : i + chunk], w, b), targets[i : i + chunk], reduction="none"
            )
            for i in range(0, len(targets), chunk)
        ]
    return torch.cat(parts) if parts else rows.new_zeros(0, dtype=torch.float32)


class LinearCrossEntropy(torch.autograd.Function):
    """Mean cross-entropy of a linear layer's output, gradients formed in the forward pass."""

    @staticmethod
    def forward(
        ctx: Any,
        rows: torch.Tensor,
        weight: torch.Tensor,
        bias: torch.Tensor | None,
        targets: torch.Tensor,
        chunk: int,
        dtype: torch.dtype,
    ) -> torch.Tensor:
        count = len(targets)
        want_w = ctx.needs_input_grad[1]
        want_b = bias is not None and ctx.needs_input_grad[2]
        grad_rows = torch.zeros_like(rows) if ctx.needs_input_grad[0] else None
        grad_w = torch.zeros_like(weight, dtype=torch.float32) if want_w else None
        grad_b = (
            torch.zeros_like(bias, dtype=torch.float32) if bias is not None and want_b else None
        )
        total = torch.zeros((), dtype=torch.float32, device=rows.device)
        with torch.autocast(rows.device.type, enabled=False):
            x, w, b = _operands(rows, weight, bias, dtype)
            for i in range(0, count, chunk):
                target = targets[i : i + chunk]
                logp = torch.log_softmax(_logits(x[i : i + chunk], w, b), dim=-1)
                total -= logp.gather(1, target[:, None]).sum()
                # d(sum of losses)/d logits = softmax - one-hot; the mean divides by count
                grad = logp.exp_()
                grad[torch.arange(len(target), device=grad.device), target] -= 1.0
                grad = grad.div_(count).to(dtype)
                if grad_rows is not None:
                    grad_rows[i : i + chunk] = (grad @ w).to(grad_rows.dtype)
                if grad_w is not None:
                    grad_w += (grad.t() @ x[i : i + chunk]).float()
                if grad_b is not None:
                    grad_b += grad.float().sum(dim=0)
        ctx.save_for_backward(grad_rows, grad_w, grad_b)
        ctx.weight_dtype, ctx.bias_dtype = weight.dtype, None if bias is None else bias.dtype
        return total / count

    @staticmethod
    def backward(
        ctx: Any, grad_out: torch.Tensor
    ) -> tuple[torch.Tensor | None, torch.Tensor | None, torch.Tensor | None, None, None, None]:
        grad_rows, grad_w, grad_b = ctx.saved_tensors
        scale = grad_out.float()
        rows = None if grad_rows is None else grad_rows * scale.to(grad_rows.dtype)
        weight = None if grad_w is None else (grad_w * scale).to(ctx.weight_dtype)
        bias = None if grad_b is None else (grad_b * scale).to(ctx.bias_dtype)
        return rows, weight, bias, None, None, None
