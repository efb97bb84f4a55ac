"""GPT-2's Python `gelu_new` runs as one fused tanh-GELU operator (finetune/models/activations.py):
same outputs and gradients, config unchanged."""

from __future__ import annotations

import pytest


def load_pair(model_dir):
    """The model as finetune loads it, and as transformers alone does."""
    from transformers import AutoModelForCausalLM

    from finetune.models import FAMILIES
    from finetune.models.loading import load_base_model, load_tokenizer
    from finetune.models.names import resolve_name

    tokenizer = load_tokenizer(str(model_dir))
    ours = load_base_model(resolve_name(str(model_dir)), FAMILIES["gpt2"], "causal", tokenizer)
    return ours.model, AutoModelForCausalLM.from_pretrained(model_dir)


def test_gpt2_gelu_is_fused_with_the_same_outputs_and_gradients(tiny_model_dir):
    import torch
    from transformers.activations import GELUTanh, NewGELUActivation

    fused, plain = load_pair(tiny_model_dir("gpt2"))
    kinds = {type(m) for m in fused.modules()}
    assert GELUTanh in kinds and NewGELUActivation not in kinds
    assert NewGELUActivation in {type(m) for m in plain.modules()}
    assert fused.config.activation_function == "gelu_new"  # what save_pretrained writes
    ids = torch.randint(5, 100, (3, 12))
    outs = []
    for model in (fused, plain):
        model.train()
        torch.manual_seed(0)  # the same dropout masks on both
        loss = model(input_ids=ids, labels=ids).loss
        loss.backward()
        outs.append((loss.item(), model.transformer.h[0].mlp.c_fc.weight.grad.clone()))
    assert outs[0][0] == pytest.approx(outs[1][0], rel=1e-5)
    assert torch.allclose(outs[0][1], outs[1][1], atol=1e-5, rtol=1e-4)


def test_fuse_gelu_leaves_other_activations_alone(tiny_model_dir):
    from transformers import AutoModel

    from finetune.models.activations import fuse_gelu

    bert = AutoModel.from_pretrained(tiny_model_dir("bert"))  # exact erf GELU
    before = [type(m) for m in bert.modules()]
    assert fuse_gelu(bert) == 0
    assert [type(m) for m in bert.modules()] == before
