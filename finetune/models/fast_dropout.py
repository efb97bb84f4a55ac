"""Dropout for CPU training whose masks cost an eighth of PyTorch's: a counter-based hash instead
of the Mersenne Twister.

On CPU, `F.dropout` / `torch.native_dropout` draw every mask element from PyTorch's MT19937
generator through `bernoulli_`, about 5 ns an element on 2 cores whatever the dtype (0.7 ns
here; benchmarks/results/fast_dropout.md). Once the
matrix products run in bf16 on AMX, that draw is a quarter of the quick start's training step
(20 dropouts a step on MiniLM), the same in the Trainer.

Here each call takes one 31-bit seed from PyTorch's generator (so `torch.manual_seed`, the
checkpointed RNG state and `--resume` decide the masks as before) and hashes a table of
pre-hashed counters with it: `lowbias32(lowbias32(i) ^ seed)` (Wellons' integer hash, a
bijection on 32 bits, computed with wrapping int32 arithmetic), 16 bits per decision, two
decisions per hash. An element is kept when its 16 bits are at least round(p * 65536), and kept
elements are scaled by 65536 / (65536 - that), the exact inverse of the keep rate, so the
output's expectation is the input as with PyTorch's dropout. The masks are different draws
from the same distribution (p is rounded to 1/65536), not PyTorch's masks: a run is
reproducible with itself, not bit for bit with an unmodified model. The mask is kept for
backward as bool (a quarter of a float mask's bytes).

Used only where it is the faster path: CPU tensors in training mode, 0 < p < 1, not inside
`torch.compile` (compiled graphs draw their own random numbers). With autograd off too: the
reentrant gradient checkpoint runs the forward without it and replays it with it, and both
passes must draw the same mask.
"""

from __future__ import annotations

import functools
import math
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # pragma: no cover
    import torch

    from finetune.types import Tensor

BITS = 16  # per keep/drop decision: p is rounded to a multiple of 1/65536
LEVELS = 1 << BITS
_COUNTERS: dict[str, Tensor] = {}  # "table": lowbias32(i), grown to the largest draw so far
# counters kept between draws (32 MB): an attention's probabilities can be 100M elements (GPT-2,
# batch 8 x 1024 tokens), whose table would stay in memory for the rest of the run
CACHED_COUNTERS = 1 << 23


def _lowbias32(h: Tensor) -> Tensor:
    """Wellons' lowbias32 on int32 in place (wrapping multiply; masks make the shifts logical)."""
    h.bitwise_xor_(h.bitwise_right_shift(16).bitwise_and_(0xFFFF))
    h.mul_(0x7FEB352D)
    h.bitwise_xor_(h.bitwise_right_shift(15).bitwise_and_(0x1FFFF))
    h.mul_(0x846CA68B - (1 << 32))
    h.bitwise_xor_(h.bitwise_right_shift(16).bitwise_and_(0xFFFF))
    return h


def _counters(count: int) -> Tensor:
    """lowbias32(0 .. count-1), cached up to CACHED_COUNTERS: one table sliced by every draw;
    a larger draw hashes its own counters (the same values, one pass more)."""
    import torch

    if count > CACHED_COUNTERS:
        return _lowbias32(torch.arange(count, dtype=torch.int32))
    table = _COUNTERS.get("table")
    if table is None or table.numel() < count:
        size = min(max(count, 2 * table.numel() if table is not None else 0), CACHED_COUNTERS)
        table = _lowbias32(torch.arange(size, dtype=torch.int32))
        _COUNTERS["table"] = table
    return table[:count]


def threshold(p: float) -> int:
    """The 16-bit level below which an element is dropped."""
    return min(LEVELS - 1, max(0, round(p * LEVELS)))


def keep_mask(shape: torch.Size | tuple[int, ...], p: float) -> tuple[Tensor, float]:
    """A bool keep-mask of `shape` with drop rate p (to 1/65536), and the scale for kept values."""
    import torch

    count = math.prod(shape)
    half = (count + 1) // 2
    seed = int(torch.randint(0, (1 << 31) - 1, (1,)))  # from PyTorch's generator: seeded, resumed
    hashed = _lowbias32(_counters(half) ^ seed)
    level = threshold(p)
    mask = torch.empty(2 * half, dtype=torch.bool)
    torch.ge(hashed.bitwise_and(0xFFFF), level, out=mask[:half])
    torch.ge(hashed.bitwise_right_shift_(16).bitwise_and_(0xFFFF), level, out=mask[half:])
    return mask[:count].view(shape), LEVELS / (LEVELS - level)


@functools.cache
def _masked_scale() -> type[torch.autograd.Function]:
    import torch

    class MaskedScale(torch.autograd.Function):
        """x * mask * scale, keeping only the bool mask for backward. `where` reads the bool
        mask as it is; `x * mask` first copied it whole to x's dtype (1.05-1.3x slower on the
        quick start's activation and attention shapes, fp32 and bf16)."""

        @staticmethod
        def forward(ctx: Any, x: Tensor, mask: Tensor, scale: float) -> Tensor:
            ctx.save_for_backward(mask)
            ctx.scale = scale
            return torch.where(mask, x, 0).mul_(scale)

        @staticmethod
        def backward(ctx: Any, grad: Tensor) -> tuple[Tensor, None, None]:
            (mask,) = ctx.saved_tensors
            return torch.where(mask, grad, 0).mul_(ctx.scale), None, None

    return MaskedScale


def applies(x: Tensor, p: float, training: bool) -> bool:
    """Whether `fast_dropout` is the path for this call (else PyTorch's dropout)."""
    import torch

    return (
        training
        and 0 < p < 1
        and x.device.type == "cpu"
        and x.numel() < (1 << 32)
        and not torch.compiler.is_compiling()
    )


def fast_dropout(x: Tensor, p: float) -> Tensor:
    """Training-mode dropout of a CPU tensor with a hashed mask (see the module docstring)."""
    mask, scale = keep_mask(x.shape, p)
    result: Tensor = _masked_scale().apply(x, mask, scale)
    return result
