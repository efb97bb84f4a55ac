"""Frozen linear weights stored in the autocast dtype (finetune/models/frozen_dtype.py): the
same loss and gradients bit for bit under bf16 autocast, for every method that allows it on
each shape; tied embeddings, trainable modules and DoRA left in fp32; and a training run under
bf16 stores them so while an fp32 one does not."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest

from finetune.methods import METHODS
from finetune.models import FAMILIES
from tests.conftest import classification_recipe, write_recipe
from tests.test_correctness_methods import _method_section

FAMILY_NAMES = ("bert", "gpt2", "t5")
# AdaLoRA needs a training plan and VB-LoRA a width its vector bank divides: covered by the run
# test below and by the method matrix; the rest are built here directly
SKIP = {"adalora", "vblora"}
CASES = [
    (name, family)
    for name, method in METHODS.items()
    for family in FAMILY_NAMES
    if method.trains
    and not method.trains_backbone
    and not method.reads_base_weights  # DoRA: left in fp32 (the setup test below)
    and name not in SKIP
    and method.unsupported_reason(FAMILIES[family], "classification") is None
]


def _model(tiny_model_dir, family: str, name: str, **options):
    """A tiny classifier with `name` applied and its trainable weights moved off their init
    (many adapters start as the identity, which would hide a difference)."""
    import torch

    from finetune.methods.base import MethodContext
    from finetune.models.loading import load_base_model, load_tokenizer
    from finetune.models.names import resolve_name

    resolved = resolve_name(str(tiny_model_dir(family)))
    tokenizer = load_tokenizer(resolved.path)
    arch = FAMILIES[family]
    loaded = load_base_model(resolved, arch, "classification", tokenizer, None, {"num_labels": 2})
    section = _method_section(name, **options)
    context = MethodContext(arch, "classification", section, loaded.new_modules)
    torch.manual_seed(0)
    model = METHODS[name].apply(loaded.model, context)
    with torch.no_grad():
        for param in model.parameters():
            if param.requires_grad:
                param.add_(torch.randn_like(param) * 0.05)
    encoded = tokenizer(["a good movie", "bad film indeed"], return_tensors="pt", padding=True)
    if family != "bert":
        encoded.pop("token_type_ids", None)
    return model, {**encoded, "labels": torch.tensor([0, 1])}


def _step(model, batch):
    import torch

    model.train()
    model.zero_grad(set_to_none=True)
    torch.manual_seed(7)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss = model(**batch).loss
    loss.backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    return loss.detach(), grads


def _assert_same_step(model, stored, batch) -> None:
    """The same loss and gradients, bit for bit, from the fp32 model and the stored one."""
    import torch

    loss, grads = _step(model, batch)
    stored_loss, stored_grads = _step(stored, batch)
    assert torch.equal(stored_loss, loss)
    assert grads.keys() == stored_grads.keys() and grads
    for key, grad in grads.items():
        assert torch.equal(stored_grads[key], grad), key


@pytest.mark.parametrize(("name", "family"), CASES)
def test_same_loss_and_gradients_bit_for_bit(name, family, tiny_model_dir):
    import torch

    from finetune.models.frozen_dtype import store_frozen_in

    model, batch = _model(tiny_model_dir, family, name)
    stored = copy.deepcopy(model)
    converted = store_frozen_in(stored, torch.bfloat16)
    assert converted > 0 or name == "bitfit"  # BitFit trains every bias: nothing is frozen
    _assert_same_step(model, stored, batch)
    for param in stored.parameters():
        if param.requires_grad:
            assert param.dtype == torch.float32  # trainable masters stay fp32


@pytest.mark.parametrize("family", FAMILY_NAMES)
def test_lora_inputs_stay_in_bf16_with_the_same_numbers(family, tiny_model_dir):
    """LoRA without dropout on every linear layer: peft's float32 copy of a bf16 input is
    skipped (uncast_lora_inputs), and loss and gradients stay bit for bit the same."""
    import torch
    from peft.tuners.lora.layer import Linear as LoraLinear

    from finetune.models.frozen_dtype import store_frozen_in

    model, batch = _model(tiny_model_dir, family, "lora", dropout=0.0, target_modules="all-linear")
    stored = copy.deepcopy(model)
    store_frozen_in(stored, torch.bfloat16)
    layers = [m for m in stored.modules() if isinstance(m, LoraLinear)]
    assert layers and not any(m.cast_input_dtype_enabled for m in layers)
    _assert_same_step(model, stored, batch)


def test_lora_inputs_keep_their_cast_under_dropout_and_variants(tiny_model_dir):
    """Dropout rounds differently in bf16 and DoRA computes with the input itself: both keep
    peft's float32 cast."""
    from peft.tuners.lora.layer import Linear as LoraLinear

    from finetune.models.frozen_dtype import uncast_lora_inputs

    for name, dropout in (("lora", 0.1), ("dora", 0.0)):
        model, _ = _model(tiny_model_dir, "bert", name, dropout=dropout)
        assert uncast_lora_inputs(model) == 0, name
        layers = [m for m in model.modules() if isinstance(m, LoraLinear)]
        assert layers and all(m.cast_input_dtype_enabled for m in layers), name


@pytest.mark.parametrize(("name", "family"), CASES)
def test_inference_with_every_weight_stored_gives_the_same_logits(name, family, tiny_model_dir):
    """At `eval` / `predict` every weight is frozen, adapters included: all linear layers are
    stored in bf16, and the logits stay bit for bit those of fp32 weights under autocast."""
    import torch

    from finetune.models.frozen_dtype import store_frozen_in

    model, batch = _model(tiny_model_dir, family, name)
    model.eval().requires_grad_(False)
    stored = copy.deepcopy(model)
    assert store_frozen_in(stored, torch.bfloat16, inference=True) > 0
    with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16):
        logits = model(**batch).logits
        stored_logits = stored(**batch).logits
    assert torch.equal(stored_logits, logits)


def test_tied_embeddings_and_trainable_modules_stay_fp32(tiny_model_dir):
    import torch
    from peft import LoraConfig, TaskType, get_peft_model

    from finetune.models.frozen_dtype import store_frozen_in
    from tests.test_prompt_cache import arch_task

    _, base = arch_task(tiny_model_dir("llama"), "llama")
    base.config.tie_word_embeddings = True
    base.tie_weights()
    assert base.lm_head.weight is base.get_input_embeddings().weight
    model = get_peft_model(base, LoraConfig(task_type=TaskType.CAUSAL_LM, r=4))
    store_frozen_in(model, torch.bfloat16)
    inner = model.base_model.model
    assert inner.lm_head.weight.dtype == torch.float32  # shared with the embedding lookup
    assert inner.get_input_embeddings().weight.dtype == torch.float32
    attention = inner.model.layers[0].self_attn
    assert attention.q_proj.base_layer.weight.dtype == torch.bfloat16
    assert attention.q_proj.lora_A["default"].weight.dtype == torch.float32
    assert attention.o_proj.weight.dtype == torch.bfloat16
    assert inner.model.norm.weight.dtype == torch.float32  # norms are not linear layers


def test_inference_gives_a_tied_head_its_own_copy_with_the_same_logits(tiny_model_dir):
    import torch

    from finetune.models.frozen_dtype import store_frozen_in
    from tests.test_chunked_loss import train_batch
    from tests.test_prompt_cache import arch_task

    task, model = arch_task(tiny_model_dir("llama"), "llama")
    model.config.tie_word_embeddings = True
    model.tie_weights()
    model.requires_grad_(False)
    stored = copy.deepcopy(model)
    assert store_frozen_in(stored, torch.bfloat16, inference=True) > 0
    assert stored.lm_head.weight is not stored.get_input_embeddings().weight
    assert stored.lm_head.weight.dtype == torch.bfloat16
    assert stored.get_input_embeddings().weight.dtype == torch.float32
    batch = {k: v for k, v in train_batch(task).items() if k != "labels"}
    with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16):
        assert torch.equal(stored(**batch).logits, model(**batch).logits)
        ids = batch["input_ids"][:1]
        generated = model.generate(input_ids=ids, max_new_tokens=6, do_sample=False)
        assert torch.equal(
            stored.generate(input_ids=ids, max_new_tokens=6, do_sample=False), generated
        )


def _setup(tmp_path: Path, tiny_model_dir, sentiment_files, method: str, precision: str, **options):
    from finetune.commands.run import load_checked
    from finetune.setup.accelerator import setup_accelerator
    from finetune.setup.run_setup import RunSetup

    train, dev = sentiment_files
    data = classification_recipe(tiny_model_dir("bert"), train, dev, tmp_path / "out", {})
    data["method"] = {"name": method}
    data["train"].update(precision=precision, **options)
    path = write_recipe(tmp_path / f"{method}-{precision}.yaml", data)
    recipe = load_checked(path, [])
    return RunSetup.for_training(recipe, path.parent, setup_accelerator(recipe))


@pytest.mark.parametrize(
    ("method", "precision", "frozen"),
    [("lora", "bf16", "bfloat16"), ("lora", "fp32", "float32"), ("dora", "bf16", "float32")],
)
def test_training_setup_stores_frozen_weights_for_its_precision(
    tmp_path, tiny_model_dir, sentiment_files, method, precision, frozen
):
    import torch

    setup = _setup(tmp_path, tiny_model_dir, sentiment_files, method, precision)
    modules = dict(setup.model.named_modules())
    base_layer = next(m for n, m in modules.items() if n.endswith("query.base_layer"))
    assert base_layer.weight.dtype == getattr(torch, frozen)
    assert all(p.dtype == torch.float32 for p in setup.model.parameters() if p.requires_grad)


def test_training_leaves_an_adapters_frozen_layers_in_fp32(
    tmp_path, tiny_model_dir, sentiment_files
):
    """LoRA-FA freezes every A matrix; its optimizer multiplies them outside autocast and the
    adapter saves them, so they stay fp32 masters while the base is stored in bf16."""
    import torch

    setup = _setup(tmp_path, tiny_model_dir, sentiment_files, "lora", "bf16", optimizer="lorafa")
    modules = dict(setup.model.named_modules())
    a = next(m for n, m in modules.items() if n.endswith("query.lora_A.default"))
    assert not a.weight.requires_grad and a.weight.dtype == torch.float32
    base_layer = next(m for n, m in modules.items() if n.endswith("query.base_layer"))
    assert base_layer.weight.dtype == torch.bfloat16


def test_parameter_counts_do_not_count_a_tied_heads_copy(tmp_path, tiny_model_dir):
    """The zero-shot run stores its weights as at inference (a tied head gets a copy of its
    own): run.json's total is still the model's."""
    from finetune.commands.run import load_checked
    from finetune.setup.accelerator import setup_accelerator
    from finetune.setup.run_setup import RunSetup
    from tests.test_zero_shot import chat_recipe

    model_dir = tiny_model_dir("gpt2")
    data = chat_recipe(model_dir, tmp_path, "summarization")
    data["train"]["precision"] = "bf16"
    path = write_recipe(tmp_path / "zero.yaml", data)
    recipe = load_checked(path, [])
    setup = RunSetup.for_training(recipe, path.parent, setup_accelerator(recipe))
    inner = setup.model
    head, embedding = inner.get_output_embeddings(), inner.get_input_embeddings()
    assert head.weight is not embedding.weight  # the copy was made
    assert setup.parameters.total == sum(
        p.numel() for n, p in inner.named_parameters() if not n.startswith("lm_head")
    )
