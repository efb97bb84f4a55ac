"""Attention with hashed probability dropout (finetune/models/fast_attention.py): sdpa's numbers
without dropout, masks (padding, causal, additive) and grouped heads handled, dropout drawn from
torch's seed, sdpa itself in evaluation, and the switch in models leaves saved configs alone."""

from __future__ import annotations

import json

import pytest

from finetune.models.fast_attention import (
    NAME,
    _math_attention,
    attention_forward,
    use_finetune_sdpa,
)


class _Attention:
    """The two attributes an attention function reads from its module."""

    def __init__(self, training: bool, is_causal: bool) -> None:
        self.training = training
        self.is_causal = is_causal


def _qkv(kv_heads: int = 4, length: int = 6):
    import torch

    torch.manual_seed(0)
    query = torch.randn(2, 4, length, 8)
    key = torch.randn(2, kv_heads, length, 8)
    value = torch.randn(2, kv_heads, length, 8)
    return query, key, value


def _sdpa(query, key, value, mask, causal):
    import torch

    groups = query.shape[1] // key.shape[1]
    key, value = key.repeat_interleave(groups, 1), value.repeat_interleave(groups, 1)
    out = torch.nn.functional.scaled_dot_product_attention(
        query, key, value, attn_mask=mask, is_causal=causal and mask is None
    )
    return out.transpose(1, 2)


def _padding(length: int = 6):
    import torch

    mask = torch.ones(2, 1, length, length, dtype=torch.bool)
    mask[0, :, :, 4:] = False  # the first row's last two keys are padding
    return mask


@pytest.mark.parametrize(
    ("mask_kind", "causal", "kv_heads"),
    [("none", False, 4), ("bool", False, 4), ("float", False, 4), ("none", True, 4),
     ("bool", True, 2), ("none", True, 1)],
)  # fmt: skip
def test_without_dropout_it_computes_sdpa(monkeypatch, mask_kind, causal, kv_heads):
    """With every element kept the hashed path is sdpa's attention: padding, additive and
    causal masks, and grouped-query heads."""
    import torch

    from finetune.models import fast_dropout

    query, key, value = _qkv(kv_heads)
    mask = {"none": None, "bool": _padding(), "float": None}[mask_kind]
    if mask_kind == "float":
        mask = torch.zeros(2, 1, 6, 6).masked_fill(~_padding(), -1e4)
    if causal and mask is not None:
        mask = mask & torch.ones(6, 6, dtype=torch.bool).tril()
    monkeypatch.setattr(
        fast_dropout, "keep_mask", lambda shape, p: (torch.ones(shape, dtype=torch.bool), 1.0)
    )
    inputs = [t.requires_grad_() for t in (query, key, value)]
    got, none = _math_attention(*inputs, mask, 0.1, None, causal)
    assert none is None
    twins = [t.detach().clone().requires_grad_() for t in inputs]
    want = _sdpa(*twins, mask, causal)
    assert got.shape == (2, 6, 4, 8)
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)
    weights = torch.randn_like(got)  # the masking in place must leave backward sdpa's too
    (got * weights).sum().backward()
    (want * weights).sum().backward()
    for ours, theirs in zip(inputs, twins):
        torch.testing.assert_close(ours.grad, theirs.grad, atol=1e-5, rtol=1e-5)


def test_dropout_follows_torchs_seed_and_reaches_the_gradients():
    import torch

    query, key, value = _qkv()
    module = _Attention(training=True, is_causal=False)
    query.requires_grad_(True)

    def draw(seed: int):
        torch.manual_seed(seed)
        out, _ = attention_forward(module, query, key, value, None, dropout=0.5)
        return out

    first, again, other = draw(1), draw(1), draw(2)
    assert torch.equal(first, again)
    assert not torch.equal(first, other)
    kept = _sdpa(query, key, value, None, False)
    assert not torch.allclose(first, kept, atol=1e-3)  # half the probabilities were dropped
    first.sum().backward()
    assert query.grad is not None and torch.isfinite(query.grad).all()


@pytest.mark.parametrize("case", ["eval", "no_dropout", "position_bias"])
def test_sdpa_itself_outside_cpu_training_with_dropout(case):
    """Evaluation, dropout 0 and T5's position bias go to transformers' sdpa: identical, down
    to sdpa's own dropout draws."""
    import torch
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    query, key, value = _qkv()
    module = _Attention(training=case != "eval", is_causal=False)
    kwargs = {"dropout": 0.0 if case == "no_dropout" else 0.1}
    if case == "position_bias":
        kwargs["position_bias"] = torch.randn(1, 4, 6, 6)
    torch.manual_seed(5)  # sdpa draws its own dropout from torch's generator: the same draws
    got, _ = attention_forward(module, query, key, value, _padding(), **kwargs)
    torch.manual_seed(5)
    want, _ = sdpa_attention_forward(module, query, key, value, _padding(), **kwargs)
    assert torch.equal(got, want)


def _spy_on_sdpa(monkeypatch) -> list[int]:
    """Count the calls that reach transformers' sdpa."""
    from transformers.integrations import sdpa_attention

    from tests.conftest import count_calls

    return count_calls(monkeypatch, sdpa_attention, "sdpa_attention_forward")


@pytest.mark.parametrize(
    ("kv_heads", "with_mask", "autocast"), [(4, True, False), (2, False, False), (2, True, True)]
)
def test_short_bf16_training_without_dropout_takes_the_math_path_with_sdpas_numbers(
    monkeypatch, kv_heads, with_mask, autocast
):
    """Llama-style attention (no dropout) in bf16 on CPU: short keys go to the math path, which
    gives sdpa's outputs and gradients (to bf16's precision), padding and causal masks alike.
    Under autocast the queries come in float32 (rotary embeddings) and bf16 is still the
    dtype the attention computes in."""
    import contextlib

    import torch

    calls = _spy_on_sdpa(monkeypatch)
    query, key, value = (t if autocast else t.bfloat16() for t in _qkv(kv_heads))
    mask = _padding() & torch.ones(6, 6, dtype=torch.bool).tril() if with_mask else None
    inputs = [t.requires_grad_() for t in (query, key, value)]
    mixed = torch.autocast("cpu", dtype=torch.bfloat16) if autocast else contextlib.nullcontext()
    with mixed:
        got, _ = attention_forward(_Attention(True, True), *inputs, mask, dropout=0.0)
    assert calls == []  # the math path, not sdpa's fused kernel
    twins = [t.detach().float().requires_grad_() for t in inputs]
    want = _sdpa(*twins, mask, causal=True)
    torch.testing.assert_close(got.float(), want, atol=2e-2, rtol=2e-2)
    weights = torch.randn(got.shape)
    (got.float() * weights).sum().backward()
    (want * weights).sum().backward()
    for ours, theirs in zip(inputs, twins):
        torch.testing.assert_close(ours.grad.float(), theirs.grad, atol=3e-2, rtol=3e-2)


@pytest.mark.parametrize("case", ["long_keys", "fp32", "eval"])
def test_long_keys_fp32_and_evaluation_without_dropout_stay_on_sdpa(monkeypatch, case):
    """The fused kernel is kept where it is not the slow one: past MATH_MAX_KEYS keys (where it
    wins, and keeps no probabilities for backward), in float32, and outside training."""
    from finetune.models.fast_attention import MATH_MAX_KEYS

    calls = _spy_on_sdpa(monkeypatch)
    length = MATH_MAX_KEYS + 1 if case == "long_keys" else 6
    query, key, value = _qkv(length=length)
    if case != "fp32":
        query, key, value = query.bfloat16(), key.bfloat16(), value.bfloat16()
    module = _Attention(training=case != "eval", is_causal=True)
    attention_forward(module, query, key, value, None, dropout=0.0)
    assert calls == [1]


def _tiny_bert(attn_implementation: str = "sdpa"):
    from transformers import BertConfig, BertForSequenceClassification

    config = BertConfig(
        vocab_size=64, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
        intermediate_size=48, attn_implementation=attn_implementation,
    )  # fmt: skip
    return BertForSequenceClassification(config)


def test_a_model_switches_trains_and_predicts_as_before(tmp_path):
    import torch
    from peft import LoraConfig, TaskType, get_peft_model

    torch.manual_seed(0)
    model = get_peft_model(
        _tiny_bert(), LoraConfig(task_type=TaskType.SEQ_CLS, r=4, target_modules=["query"])
    )
    ids = torch.randint(0, 64, (3, 7))
    attention_mask = torch.ones(3, 7, dtype=torch.long)
    attention_mask[0, 5:] = 0
    model.eval()
    with torch.no_grad():
        before = model(input_ids=ids, attention_mask=attention_mask).logits
    assert use_finetune_sdpa(model)
    assert model.get_base_model().config._attn_implementation == NAME
    with torch.no_grad():
        assert torch.equal(model(input_ids=ids, attention_mask=attention_mask).logits, before)
    model.train()
    loss = model(input_ids=ids, attention_mask=attention_mask, labels=torch.tensor([0, 1, 1])).loss
    loss.backward()
    grads = [p.grad for p in model.parameters() if p.requires_grad]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
    model.get_base_model().save_pretrained(tmp_path)
    saved = json.loads((tmp_path / "config.json").read_text())
    assert NAME not in json.dumps(saved)  # loads anywhere: the swap is in memory only


def test_other_implementations_are_left_alone():
    model = _tiny_bert("eager")
    assert not use_finetune_sdpa(model)
    assert model.config._attn_implementation == "eager"


def test_a_causal_prefill_longer_than_the_queries_is_cropped_as_sdpa_crops_it(monkeypatch):
    """Keys beyond the queries with no mask (an empty static cache's prefill): sdpa keeps the
    first q_length keys under its causal mask; so does the hashed path."""
    import torch
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    from finetune.models import fast_dropout

    query, _, _ = _qkv(length=6)
    _, key, value = _qkv(length=9)
    monkeypatch.setattr(
        fast_dropout, "keep_mask", lambda shape, p: (torch.ones(shape, dtype=torch.bool), 1.0)
    )
    module = _Attention(training=True, is_causal=True)
    got, _ = attention_forward(module, query, key, value, None, dropout=0.1)
    want, _ = sdpa_attention_forward(_Attention(False, True), query, key, value, None)
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)


def test_probabilities_past_the_counters_range_go_to_sdpa():
    import torch

    from finetune.models.fast_attention import _too_large

    one = torch.empty(1, 1, 1, 1)
    assert not _too_large(one.expand(8, 12, 1024, 64), one.expand(8, 12, 1024, 64))
    assert _too_large(one.expand(64, 32, 2048, 64), one.expand(64, 8, 32768, 64))


def test_large_draws_hash_their_own_counters_and_leave_the_cache_bounded(monkeypatch):
    import torch

    from finetune.models import fast_dropout

    monkeypatch.setattr(fast_dropout, "_COUNTERS", {})
    torch.manual_seed(4)
    cached, _ = fast_dropout.keep_mask((64, 100), 0.3)
    monkeypatch.setattr(fast_dropout, "_COUNTERS", {})
    monkeypatch.setattr(fast_dropout, "CACHED_COUNTERS", 1000)
    torch.manual_seed(4)
    uncached, _ = fast_dropout.keep_mask((64, 100), 0.3)  # 3,200 counters: past the cap
    assert torch.equal(cached, uncached)
    assert "table" not in fast_dropout._COUNTERS
    fast_dropout.keep_mask((30, 50), 0.3)  # 750 counters: cached, grown up to the cap only
    fast_dropout.keep_mask((39, 50), 0.3)
    assert fast_dropout._COUNTERS["table"].numel() == 1000
