"""The last layer of a first-token classifier computes position 0 only
(finetune/models/first_token.py): the same logits, loss and gradients as the layer's own
forward for every family it applies to, left alone everywhere else, and on in training runs."""

from __future__ import annotations

import copy

import pytest

SWAPS = ["bert", "roberta", "xlm-roberta", "camembert", "electra", "distilbert"]
# encoders whose layer code is not BERT's, a decoder and an encoder-decoder classifier
LEFT_ALONE = ["deberta", "deberta-v2", "albert", "mpnet", "modernbert", "gpt2", "t5"]


NO_DROPOUT = {"hidden_dropout_prob": 0.0, "attention_probs_dropout_prob": 0.0}
NO_DROPOUT_DISTILBERT = {"dropout": 0.0, "attention_dropout": 0.0, "seq_classif_dropout": 0.0}


def _classifier(tiny_model_dir, family: str, attention: str = "sdpa", num_labels: int = 3):
    import torch
    from transformers import AutoModelForSequenceClassification

    torch.manual_seed(0)
    return AutoModelForSequenceClassification.from_pretrained(
        tiny_model_dir(family),
        num_labels=num_labels,
        attn_implementation=attention,
        **(NO_DROPOUT_DISTILBERT if family == "distilbert" else NO_DROPOUT),
    )


def _batch(num_labels: int = 3):
    import torch

    generator = torch.Generator().manual_seed(1)
    ids = torch.randint(5, 100, (4, 12), generator=generator)
    mask = torch.ones_like(ids)
    mask[1, 7:] = 0  # padded rows: the first position must ignore their padding
    mask[3, 3:] = 0
    ids[mask == 0] = 0
    labels = torch.tensor([0, 1, 2, 1]) if num_labels > 1 else torch.tensor([0.1, 2.0, 4.5, 3.3])
    return {"input_ids": ids, "attention_mask": mask, "labels": labels}


def _step(model, batch):
    model.zero_grad(set_to_none=True)
    out = model(**batch)
    out.loss.backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    return out.logits.detach(), out.loss.detach(), grads


def _assert_same(first, second):
    import torch

    (logits, loss, grads), (logits2, loss2, grads2) = first, second
    torch.testing.assert_close(logits2, logits, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(loss2, loss, rtol=1e-5, atol=1e-6)
    assert grads2.keys() == grads.keys() and grads
    for name in grads:
        torch.testing.assert_close(grads2[name], grads[name], rtol=1e-4, atol=1e-6, msg=name)


@pytest.mark.parametrize("attention", ["sdpa", "eager"])
@pytest.mark.parametrize("family", SWAPS)
def test_same_numbers_as_the_whole_last_layer(tiny_model_dir, family, attention):
    from finetune.models.first_token import first_token_last_layer

    model = _classifier(tiny_model_dir, family, attention)
    swapped = copy.deepcopy(model)
    assert first_token_last_layer(swapped)
    batch = _batch()
    model.train()
    swapped.train()
    _assert_same(_step(model, batch), _step(swapped, batch))
    model.eval()  # evaluation runs the whole layer: bit for bit what a reloaded run computes
    swapped.eval()
    assert model(**batch).logits.equal(swapped(**batch).logits)


def test_the_last_layer_outputs_one_position(tiny_model_dir):
    import torch

    from finetune.models.first_token import first_token_last_layer

    model = _classifier(tiny_model_dir, "bert")
    batch = _batch()
    batch.pop("labels")
    model.train()
    full = model.bert(**batch).last_hidden_state
    first_token_last_layer(model)
    with torch.no_grad():
        cut = model.bert(**batch).last_hidden_state
        whole = model.eval().bert(**batch).last_hidden_state
    assert full.shape[1] == whole.shape[1] == 12
    assert cut.shape[1] == 1  # in training, the work left out is really left out
    torch.testing.assert_close(cut[:, 0], full[:, 0].detach(), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize(
    ("family", "targets"),
    [
        ("bert", ["query", "value"]),
        ("roberta", ["query", "value"]),
        ("distilbert", ["q_lin", "v_lin"]),
    ],
)
def test_regression_and_lora_through_peft(tiny_model_dir, family, targets):
    from peft import LoraConfig, get_peft_model

    from finetune.models.first_token import first_token_last_layer

    base = _classifier(tiny_model_dir, family, num_labels=1)
    config = LoraConfig(r=4, lora_alpha=8, target_modules=targets, task_type="SEQ_CLS")
    model = get_peft_model(base, config)
    swapped = copy.deepcopy(model)
    assert first_token_last_layer(swapped)
    assert not first_token_last_layer(swapped)  # once
    batch = _batch(num_labels=1)
    model.train()
    swapped.train()
    _assert_same(_step(model, batch), _step(swapped, batch))


def test_a_call_with_a_cache_runs_the_whole_layer(tiny_model_dir):
    """A cache (keys and values of earlier positions) takes the layer's own forward."""
    import torch
    from transformers import DynamicCache

    from finetune.models.first_token import first_token_last_layer

    model = _classifier(tiny_model_dir, "bert").train()
    last = model.bert.encoder.layer[-1]
    hidden = torch.randn(2, 5, 32, generator=torch.Generator().manual_seed(2))
    whole = last(hidden, cache=DynamicCache(config=model.config))
    first_token_last_layer(model)
    again = last(hidden, cache=DynamicCache(config=model.config))
    assert again.shape == whole.shape == (2, 5, 32)
    torch.testing.assert_close(again, whole)
    assert last(hidden).shape == (2, 1, 32)


@pytest.mark.parametrize("family", LEFT_ALONE)
def test_other_models_are_left_alone(tiny_model_dir, family):
    from transformers import AutoModelForSequenceClassification

    from finetune.models.first_token import SWAPPED, first_token_last_layer

    model = AutoModelForSequenceClassification.from_pretrained(tiny_model_dir(family), num_labels=2)
    assert not first_token_last_layer(model)
    assert not any(hasattr(m, SWAPPED) for m in model.modules())


def test_a_layer_whose_code_differs_is_left_alone(tiny_model_dir):
    from finetune.models.first_token import first_token_last_layer

    model = _classifier(tiny_model_dir, "bert")
    last = model.bert.encoder.layer[-1]
    last.chunk_size_feed_forward = 4  # chunked feed-forward: not the code the swap replaces
    assert not first_token_last_layer(model)
    last.chunk_size_feed_forward = 0
    other = type("OtherLayer", (type(last),), {"forward": lambda self, *a, **k: a[0]})
    last.__class__ = other
    assert not first_token_last_layer(model)


@pytest.mark.parametrize("family", ["bert", "roberta"])
def test_a_checkpoint_configured_as_a_decoder_is_left_alone(tiny_model_dir, family):
    """Causal self-attention: sdpa drops the causal flag for a one-position query, so the
    swapped layer would let position 0 see every position (no padding, no cache)."""
    from transformers import AutoModelForSequenceClassification

    from finetune.models.first_token import first_token_last_layer

    model = AutoModelForSequenceClassification.from_pretrained(
        tiny_model_dir(family), num_labels=3, is_decoder=True, use_cache=False
    )
    assert not first_token_last_layer(model)


def test_an_instance_forward_is_left_alone(tiny_model_dir):
    """A forward set on the layer itself (accelerate's dispatch hooks do that) is not ours to
    replace."""
    from finetune.models.first_token import first_token_last_layer

    model = _classifier(tiny_model_dir, "bert")
    last = model.bert.encoder.layer[-1]
    own = last.forward
    last.forward = lambda *args, **kwargs: own(*args, **kwargs)
    assert not first_token_last_layer(model)


def test_gradient_checkpointing_still_checkpoints_the_last_layer(tiny_model_dir):
    from finetune.models.first_token import first_token_last_layer
    from finetune.models.memory import enable_gradient_checkpointing

    model = _classifier(tiny_model_dir, "bert")
    enable_gradient_checkpointing(model)
    swapped = copy.deepcopy(model)
    assert first_token_last_layer(swapped)
    last = swapped.bert.encoder.layer[-1]
    checkpoint, calls = last._gradient_checkpointing_func, []

    def counted(*args, **kwargs):
        calls.append(1)
        return checkpoint(*args, **kwargs)

    last._gradient_checkpointing_func = counted
    batch = _batch()
    model.train()
    swapped.train()
    _assert_same(_step(model, batch), _step(swapped, batch))
    assert calls  # the swapped layer went through the checkpoint, as the class forward would
    assert last(swapped.bert.embeddings(batch["input_ids"])).shape[1] == 1


@pytest.mark.parametrize(
    ("family", "method"), [("bert", "lora"), ("bert", "full"), ("distilbert", "lora")]
)
def test_training_runs_swap_it(tmp_path, tiny_model_dir, sentiment_files, family, method):
    from finetune.commands.run import load_checked
    from finetune.models.first_token import SWAPPED
    from finetune.setup.accelerator import setup_accelerator
    from finetune.setup.run_setup import RunSetup
    from tests.conftest import classification_recipe, write_recipe

    train, dev = sentiment_files
    data = classification_recipe(tiny_model_dir(family), train, dev, tmp_path / "out", {})
    data["method"] = {"name": method}
    path = write_recipe(tmp_path / "recipe.yaml", data)
    recipe = load_checked(path, [])
    setup = RunSetup.for_training(recipe, path.parent, setup_accelerator(recipe))
    found = [name for name, m in setup.model.named_modules() if getattr(m, SWAPPED, False)]
    assert [name.rsplit(".", 2)[-2:] for name in found] == [["layer", "1"]]  # the last layer
