"""Attention in the autocast dtype on CPU in training: hashed probability dropout, and the math
path where PyTorch's fused CPU kernel is the slow one.

With attention dropout in training (BERT-family encoders, GPT-2: 0.1), PyTorch's CPU
`scaled_dot_product_attention` cannot use its fused kernel and takes the math path: it casts
bf16 queries, keys and values up to float32, computes there, draws the dropout mask with
`bernoulli_` (the Mersenne Twister, ~5 ns an element) and casts back. On the quick-start step
(MiniLM, bf16 on a 2-core CPU) that attention dropout was 7% of the time and its casts most of
the rest of the attention's copies (benchmarks/results/profile_step_bf16.md).

Without dropout (Llama, Qwen, Mistral: attention dropout 0) sdpa takes its fused CPU kernel,
`_scaled_dot_product_flash_attention_for_cpu`, whose bf16 backward is slow on short rows: on
SmolLM2-135M classification (batch 16, 48 tokens, bf16) it was 20% of the whole step, and at 48
keys its forward + backward takes 3-4x the eager math's (benchmarks/sdpa_cpu.py). The fused
kernel wins from about 256 keys, and it keeps no [queries, keys] probabilities for backward,
so the math path is taken only up to MATH_MAX_KEYS keys.

`finetune_sdpa` is transformers' `sdpa` except in those two cases (CPU, training, dropout > 0
or bf16 with at most MATH_MAX_KEYS keys; no position bias, soft-capping, sliding window or
attention sinks): there it computes the attention as transformers' eager attention does
(products in the autocast dtype, softmax in float32) and drops probabilities with
models/fast_dropout.py's hashed mask, kept as bool. Its masks are other draws from the same
distribution, seeded from torch's generator like every other dropout of a run. Evaluation,
generation, GPUs and `torch.compile` call `sdpa` itself, so what a run predicts and saves is
computed as before.

The implementation is set in memory only, for training (models/lean_backward.py); transformers
does not write `_attn_implementation` to config.json, so saved models load anywhere.
"""

from __future__ import annotations

import functools
import logging
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # pragma: no cover
    import torch

    from finetune.types import Model, Tensor

log = logging.getLogger(__name__)

NAME = "finetune_sdpa"
# keyword arguments that only sdpa's path (or none of ours) handles: their presence means sdpa
UNSUPPORTED = ("position_bias", "softcap", "sliding_window", "s_aux", "sinks", "output_attentions")
# the longest keys for which the math path replaces sdpa's fused bf16 CPU kernel without dropout
MATH_MAX_KEYS = 128


def attention_forward(
    module: torch.nn.Module,  # a transformers attention module (training flag, is_causal)
    query: Tensor,
    key: Tensor,
    value: Tensor,
    attention_mask: Tensor | None,
    dropout: float = 0.0,
    scaling: float | None = None,
    is_causal: bool | None = None,
    **kwargs: Any,
) -> tuple[Tensor, None]:
    """transformers' attention-function signature: (output [batch, length, heads, dim], None)."""
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    from finetune.models.fast_dropout import applies

    # present means given: a tensor or a number (output_attentions=False is the default, absent)
    extra = any(kwargs.get(name) is not None and kwargs[name] is not False for name in UNSUPPORTED)
    dropping = applies(query, dropout, module.training)
    short_bf16 = dropout == 0 and _fused_kernel_is_slower(query, key, module.training)
    if extra or not (dropping or short_bf16) or _too_large(query, key):
        return sdpa_attention_forward(
            module, query, key, value, attention_mask, dropout, scaling, is_causal, **kwargs
        )
    causal = is_causal if is_causal is not None else getattr(module, "is_causal", True)
    return _math_attention(query, key, value, attention_mask, dropout, scaling, causal)


def _fused_kernel_is_slower(query: Tensor, key: Tensor, training: bool) -> bool:
    """CPU training in bf16 with short keys: where sdpa's fused CPU kernel is the slow path.
    Under autocast the queries arrive in float32 (Llama's rotary embedding multiplies them by
    float32 cos/sin) and sdpa casts them to bf16 itself, so the autocast dtype decides."""
    import torch

    autocast = torch.is_autocast_enabled("cpu")
    dtype = torch.get_autocast_dtype("cpu") if autocast else query.dtype
    return (
        training
        and query.device.type == "cpu"
        and dtype == torch.bfloat16
        and key.shape[-2] <= MATH_MAX_KEYS
        and not torch.compiler.is_compiling()
    )


def _too_large(query: Tensor, key: Tensor) -> bool:
    """Probabilities past 2^32 elements: more than the hashed mask's int32 counters can index."""
    batch, heads, q_length = query.shape[:3]
    return bool(batch * heads * q_length * key.shape[-2] >= 1 << 32)


def _math_attention(
    query: Tensor,
    key: Tensor,
    value: Tensor,
    mask: Tensor | None,
    dropout: float,
    scaling: float | None,
    causal: bool,
) -> tuple[Tensor, None]:
    """softmax(q k^T * scale + mask), with hashed dropout when `dropout` > 0, times v
    (transformers' eager math)."""
    import torch

    from finetune.models.fast_dropout import fast_dropout

    groups = query.shape[1] // key.shape[1]
    if groups > 1:  # grouped-query attention: each key/value head serves `groups` query heads
        key = key.repeat_interleave(groups, dim=1)
        value = value.repeat_interleave(groups, dim=1)
    q_length = query.shape[-2]
    causal = mask is None and causal and q_length > 1  # sdpa's mask function skipped the mask
    if causal and key.shape[-2] > q_length:  # sdpa's crop (prefill of an empty static cache)
        key, value = key[..., :q_length, :], value[..., :q_length, :]
    scale = scaling if scaling is not None else query.shape[-1] ** -0.5
    scores = torch.matmul(query, key.transpose(-2, -1)) * scale
    if causal:
        mask = torch.ones(q_length, q_length, dtype=torch.bool, device=scores.device).tril()
    # in place: `scores` is this function's own product, which no backward reads (a copy of
    # the whole [batch, heads, length, length] block per layer saved)
    if mask is not None and mask.dtype == torch.bool:
        scores.masked_fill_(~mask, torch.finfo(scores.dtype).min)
    elif mask is not None:
        scores.add_(mask)
    probs = torch.softmax(scores, dim=-1, dtype=torch.float32).to(query.dtype)
    if dropout > 0:
        probs = fast_dropout(probs, dropout)
    output = torch.matmul(probs, value)
    return output.transpose(1, 2).contiguous(), None


@functools.cache
def register() -> str:
    """Register `finetune_sdpa` (and sdpa's mask for it) with transformers, once."""
    from transformers import AttentionInterface, AttentionMaskInterface
    from transformers.masking_utils import sdpa_mask

    AttentionInterface.register(NAME, attention_forward)
    AttentionMaskInterface.register(NAME, sdpa_mask)
    return NAME


def use_finetune_sdpa(model: Model) -> bool:
    """Switch a model that attends with `sdpa` to `finetune_sdpa`; whether it was switched.

    Models on another implementation (eager, flash, flex, a user's choice) and models that
    cannot switch (no attention-function interface) are left as they are."""
    from finetune.methods.wrapped import transformers_model

    base = transformers_model(model)
    config = getattr(base, "config", None)
    if config is None or getattr(config, "_attn_implementation", None) != "sdpa":
        return False
    if not getattr(base, "_supports_attention_backend", False):
        return False
    try:  # it may only warn and keep sdpa, or raise after switching the top-level config
        base.set_attn_implementation(register())
    except (ValueError, ImportError, KeyError, AttributeError) as exc:
        log.debug("attention left on sdpa: %s", exc)
        base.set_attn_implementation("sdpa")
    return bool(config._attn_implementation == NAME)
