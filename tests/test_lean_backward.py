"""Gated MLPs that recompute their activation (finetune/models/lean_backward.py): bit-for-bit
the same losses and gradients for every decoder of the architecture table, and fewer bytes kept
for backward. Its dropout swap draws other masks (hashed, tests/test_fast_dropout.py)."""

from __future__ import annotations

import copy

import pytest

from finetune.models.lean_backward import is_gated_mlp, lean_backward
from tests.test_chunked_loss import lora, train_batch
from tests.test_prompt_cache import DECODERS, arch_task

GATED = {"llama", "mistral", "qwen2", "qwen3", "gemma", "gemma2", "olmo"}


def step(model, batch):
    """Loss, gradients and bytes kept for backward of one seeded training forward."""
    import torch

    kept: dict[int, int] = {}

    def pack(tensor):
        storage = tensor.untyped_storage()
        kept[storage.data_ptr()] = storage.nbytes()
        return tensor

    params = {id(p) for p in model.parameters()}
    model.zero_grad(set_to_none=True)
    torch.manual_seed(7)
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        loss = model(**batch).loss
    weights = sum(p.untyped_storage().nbytes() for p in model.parameters() if id(p) in params
                  and p.untyped_storage().data_ptr() in kept)  # fmt: skip
    loss.backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    return loss.detach(), grads, sum(kept.values()) - weights


@pytest.mark.parametrize("model_type", DECODERS)
def test_same_numbers_fewer_bytes(model_type, tiny_model_dir):
    import torch
    from peft import LoraConfig, TaskType, get_peft_model

    from finetune.models import ARCHITECTURES

    task, base = arch_task(tiny_model_dir(model_type), model_type)
    targets = list(ARCHITECTURES[model_type].lora_targets)
    config = LoraConfig(task_type=TaskType.CAUSAL_LM, r=4, target_modules=targets, lora_dropout=0.0)
    plain = get_peft_model(base, config).train()
    for module in plain.modules():  # the swapped dropout draws other masks: compare without
        if isinstance(module, torch.nn.Dropout):
            module.p = 0.0
    lean = copy.deepcopy(plain)
    counts = lean_backward(lean)
    assert counts["dropout"] == 0
    assert (counts["gated_mlp"] > 0) == (model_type in GATED)
    batch = train_batch(task)
    loss, grads, kept = step(plain, batch)
    lean_loss, lean_grads, lean_kept = step(lean, batch)
    assert torch.equal(lean_loss, loss)
    assert grads.keys() == lean_grads.keys()
    for name, grad in grads.items():
        assert torch.equal(lean_grads[name], grad), name
    assert lean_kept < kept if model_type in GATED else lean_kept == kept


def test_eval_mode_and_no_grad_are_untouched(tiny_model_dir):
    import torch

    task, model = arch_task(tiny_model_dir("llama"), "llama")
    model = lora(model, "llama")
    batch = train_batch(task)
    with torch.no_grad():
        before = model(**batch).logits
        lean_backward(model)
        after = model(**batch).logits
    assert torch.equal(before, after)


def test_a_gated_mlp_is_recognised_by_its_code_only():
    import torch

    class Lookalike(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.gate_proj = self.up_proj = self.down_proj = torch.nn.Linear(2, 2)
            self.act_fn = torch.nn.SiLU()

        def forward(self, x):
            down_proj = self.down_proj(self.act_fn(self.gate_proj(x)) + self.up_proj(x))
            return down_proj

    assert not is_gated_mlp(Lookalike())  # a sum, not a product: left alone
