"""Hashed dropout masks for CPU training (finetune/models/fast_dropout.py): the drop rate and
scale of PyTorch's dropout, independent draws, reproducible from torch's seed, gradients
through the kept elements only, a bool mask kept for backward, and the swap in models."""

from __future__ import annotations

import numpy as np
import pytest

from finetune.models.fast_dropout import LEVELS, applies, fast_dropout, keep_mask, threshold


def _lowbias32_reference(values: np.ndarray) -> np.ndarray:
    h = values.astype(np.uint32)
    h ^= h >> np.uint32(16)
    h *= np.uint32(0x7FEB352D)
    h ^= h >> np.uint32(15)
    h *= np.uint32(0x846CA68B)
    h ^= h >> np.uint32(16)
    return h


def test_the_int32_hash_is_lowbias32_on_unsigned_32_bits():
    import torch

    from finetune.models.fast_dropout import _lowbias32

    counters = np.arange(5000, dtype=np.uint32) ^ np.uint32(0x9E3779B9)
    got = _lowbias32(torch.from_numpy(counters.view(np.int32).copy())).numpy().view(np.uint32)
    assert np.array_equal(got, _lowbias32_reference(counters))


@pytest.mark.parametrize("p", [0.05, 0.1, 0.5])
def test_drop_rate_and_scale_match_dropout(p):
    import torch

    torch.manual_seed(0)
    mask, scale = keep_mask((1000, 1000), p)
    assert mask.dtype == torch.bool and mask.shape == (1000, 1000)
    keep = 1 - threshold(p) / LEVELS
    assert abs(keep - (1 - p)) < 1 / LEVELS
    assert abs(mask.float().mean().item() - keep) < 0.002  # 1e6 draws: sd 0.0005
    assert scale * keep == pytest.approx(1.0, abs=1e-12)  # expectation kept exactly


def test_draws_are_independent_and_follow_the_seed():
    import torch

    p = 0.3
    torch.manual_seed(1)
    first, _ = keep_mask((400_001,), p)
    second, _ = keep_mask((400_001,), p)
    torch.manual_seed(1)
    again, _ = keep_mask((400_001,), p)
    assert torch.equal(first, again)
    assert not torch.equal(first, second)
    drop1, drop2 = ~first, ~second
    both = (drop1 & drop2).float().mean().item()
    assert abs(both - p * p) < 0.004  # independent calls
    neighbours = (drop1[1:] & drop1[:-1]).float().mean().item()
    assert abs(neighbours - p * p) < 0.004  # adjacent elements
    half = 200_001  # each hash gives two decisions: the halves must not agree more than chance
    halves = (drop1[:200_000] & drop1[half:]).float().mean().item()
    assert abs(halves - p * p) < 0.005


def test_forward_and_backward_scale_the_kept_elements_only():
    import torch

    x = torch.randn(8, 16, 32, requires_grad=True)
    upstream = torch.randn(8, 16, 32)
    torch.manual_seed(5)
    out = fast_dropout(x, 0.25)
    out.backward(upstream)
    torch.manual_seed(5)
    mask, scale = keep_mask(x.shape, 0.25)
    assert torch.equal(out, x.detach() * mask * scale)
    assert torch.equal(x.grad, upstream * mask * scale)
    assert 0 < (~mask).sum() < mask.numel()


def test_the_mask_is_kept_as_bool_in_the_input_dtype():
    import torch

    kept = []
    x = torch.randn(4, 64, dtype=torch.bfloat16, requires_grad=True)
    with torch.autograd.graph.saved_tensors_hooks(lambda t: kept.append(t) or t, lambda t: t):
        out = fast_dropout(x, 0.1)
    assert out.dtype == torch.bfloat16
    assert [t.dtype for t in kept] == [torch.bool]


def test_it_applies_to_cpu_training_only():
    """Training mode with or without autograd (a reentrant checkpoint's forward runs without)."""
    import torch

    x = torch.ones(3)
    assert applies(x, 0.1, training=True)
    assert not applies(x, 0.1, training=False)
    assert not applies(x, 0.0, training=True) and not applies(x, 1.0, training=True)
    with torch.no_grad():
        assert applies(x, 0.1, training=True)


def test_models_dropouts_draw_hashed_masks_in_training_only(tiny_model_dir):
    """lean_backward swaps every nn.Dropout: in training it is fast_dropout with torch's seed,
    in eval the identity as before."""
    import torch
    from peft import LoraConfig, TaskType, get_peft_model

    from finetune.models.lean_backward import lean_backward
    from tests.test_prompt_cache import arch_task

    _, base = arch_task(tiny_model_dir("llama"), "llama")
    config = LoraConfig(task_type=TaskType.CAUSAL_LM, r=4, lora_dropout=0.2)
    model = get_peft_model(base, config)
    assert lean_backward(model)["dropout"] > 0
    dropout = next(m for m in model.modules() if type(m) is torch.nn.Dropout)
    x = torch.randn(2, 5, 7, requires_grad=True)
    model.train()
    torch.manual_seed(9)
    swapped = dropout(x)
    torch.manual_seed(9)
    assert torch.equal(swapped, fast_dropout(x, 0.2))
    model.eval()
    assert torch.equal(dropout(x), x)


@pytest.mark.parametrize("reentrant", [False, True])
def test_checkpointing_replays_the_same_masks(reentrant):
    """Gradient checkpointing recomputes the forward in backward: the seed comes from torch's
    generator, whose state the checkpoint restores, so the replayed masks are the same."""
    import torch
    from torch.utils.checkpoint import checkpoint

    from finetune.models.lean_backward import bool_mask_dropout

    torch.manual_seed(0)
    block = torch.nn.Sequential(torch.nn.Dropout(0.3), torch.nn.Linear(16, 16))
    assert bool_mask_dropout(block) == 1
    x = torch.randn(8, 16, requires_grad=True)

    def run(checkpointed: bool):
        block.zero_grad(set_to_none=True)
        torch.manual_seed(3)
        out = checkpoint(block, x, use_reentrant=reentrant) if checkpointed else block(x)
        out.square().sum().backward()
        return out.detach(), block[1].weight.grad.clone()

    plain_out, plain_grad = run(False)
    ckpt_out, ckpt_grad = run(True)
    assert torch.equal(ckpt_out, plain_out)
    assert torch.equal(ckpt_grad, plain_grad)
