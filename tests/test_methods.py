"""Method registry, support table, bottleneck adapters, peft mappings and the guards."""

from __future__ import annotations

import json

import pytest

from finetune.cli import app
from finetune.errors import FinetuneError
from finetune.methods import METHODS
from finetune.methods.base import MethodContext
from finetune.methods.bottleneck import BottleneckConfig
from finetune.methods.peft_methods import LoraConfig
from finetune.models import FAMILIES
from finetune.recipe.schema import METHOD_NAMES
from tests.conftest import REPO, classification_recipe, write_recipe

# --------------------------------------------------------------------------- registry / table


def test_registry_is_closed_and_matches_schema():
    assert tuple(METHODS) == METHOD_NAMES
    for name, method in METHODS.items():
        assert method.name == name and method.description


def test_support_table_in_docs_is_current():
    from finetune.methods.table import committed_table, render_table

    assert committed_table(REPO / "docs" / "methods.md") == render_table(), (
        "docs/methods.md is stale: run python -m finetune.methods.table --write"
    )


def test_importing_methods_stays_torch_free():
    import subprocess
    import sys

    code = (
        "import sys, finetune.methods, finetune.methods.table; "
        "print(any(m.split('.')[0] in ('torch', 'transformers', 'peft') for m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


# --------------------------------------------------------------------------- helpers


def load(tiny_model_dir, family: str, kind: str = "classification"):
    """A tiny base model as the pipeline loads it (head / bert2bert included)."""
    from finetune.models.loading import load_base_model, load_tokenizer
    from finetune.models.names import resolve_name

    resolved = resolve_name(str(tiny_model_dir(family)))
    tokenizer = load_tokenizer(resolved.path)
    overrides = {"num_labels": 2} if kind == "classification" else {}
    loaded = load_base_model(resolved, FAMILIES[family], kind, tokenizer, None, overrides)
    loaded.model.eval()
    return loaded, tokenizer


def batch(tokenizer, kind: str):
    import torch

    enc = tokenizer(
        ["the movie was good", "a really dull plot it was"], return_tensors="pt", padding=True
    )
    inputs = {"input_ids": enc["input_ids"], "attention_mask": enc["attention_mask"]}
    if kind == "seq2seq":
        inputs["labels"] = torch.tensor([[5, 6, 7], [8, 9, 10]])
    return inputs


def method_config(name: str, **options):
    """A recipe method section, validated like a recipe's."""
    from pydantic import TypeAdapter

    from finetune.recipe.schema import MethodConfig

    return TypeAdapter(MethodConfig).validate_python({"name": name, **options})


def ctx_for(loaded, family: str, kind: str, config) -> MethodContext:
    return MethodContext(FAMILIES[family], kind, config, list(loaded.new_modules))


# --------------------------------------------------------------------------- bottleneck


@pytest.mark.parametrize(
    ("family", "kind"),
    [("bert", "classification"), ("gpt2", "causal"), ("t5", "seq2seq"), ("bert", "seq2seq")],
)
@pytest.mark.parametrize("name", ["houlsby", "pfeiffer"])
def test_bottleneck_starts_as_base_model_and_is_in_the_path(name, family, kind, tiny_model_dir):
    import torch

    loaded, tokenizer = load(tiny_model_dir, family, kind)
    inputs = batch(tokenizer, kind)
    with torch.no_grad():
        base = loaded.model(**inputs).logits.clone()
    config = BottleneckConfig(name=name)
    model = METHODS[name].apply(loaded.model, ctx_for(loaded, family, kind, config))
    with torch.no_grad():
        same = model(**inputs).logits
        assert torch.allclose(same, base, atol=1e-6)
        for param_name, param in model.named_parameters():
            if ".bottleneck.up." in f".{param_name}":
                param.normal_(0, 0.5)
        moved = model(**inputs).logits
    assert not torch.allclose(moved, base, atol=1e-3), "adapters are not in the forward path"


def _count(model, pattern: str) -> int:
    return sum(p.numel() for n, p in model.named_parameters() if p.requires_grad and pattern in n)


@pytest.mark.parametrize(
    ("family", "kind", "name", "options", "adapters", "hidden"),
    [
        ("bert", "classification", "houlsby", {}, 4, 32),
        ("bert", "classification", "pfeiffer", {"reduction_factor": 4}, 2, 32),
        ("bert", "classification", "houlsby", {"bottleneck_size": 5, "layers": [1]}, 2, 32),
        ("gpt2", "causal", "houlsby", {"reduction_factor": 8}, 4, 32),
        ("t5", "seq2seq", "houlsby", {}, 8, 32),  # 2 encoder + 2 decoder blocks, 2 sites
        ("t5", "seq2seq", "pfeiffer", {"layers": [0]}, 2, 32),
    ],
)
def test_trainable_parameters_match_formula(
    family, kind, name, options, adapters, hidden, tiny_model_dir
):
    from finetune.commands.build import count_parameters
    from finetune.methods.bottleneck import adapter_parameters, bottleneck_width

    loaded, _ = load(tiny_model_dir, family, kind)
    config = BottleneckConfig(name=name, **options)
    model = METHODS[name].apply(loaded.model, ctx_for(loaded, family, kind, config))
    width = bottleneck_width(hidden, config.reduction_factor, config.bottleneck_size)
    assert width == (options.get("bottleneck_size") or hidden // config.reduction_factor)
    expected = adapters * adapter_parameters(hidden, width)
    assert _count(model, ".bottleneck.") == expected
    head = sum(_count(model, m) for m in loaded.new_modules)
    assert count_parameters(model)[0] == expected + head


def test_insertion_points_cover_distilbert_and_skip_bert2bert_cross_attention(tiny_model_dir):
    from transformers import DistilBertConfig, DistilBertForSequenceClassification

    from finetune.methods.bottleneck import insertion_points

    bert = FAMILIES["bert"]
    distil = DistilBertForSequenceClassification(
        DistilBertConfig(vocab_size=50, dim=16, n_layers=2, n_heads=2, hidden_dim=32)
    )
    sites = ("attention_output", "ffn_output")
    # DistilBERT has no dropout after out_lin; the FFN's dropout follows lin2
    assert insertion_points(distil, bert, sites, None, []) == [
        "distilbert.transformer.layer.0.attention.out_lin",
        "distilbert.transformer.layer.0.ffn.dropout",
        "distilbert.transformer.layer.1.attention.out_lin",
        "distilbert.transformer.layer.1.ffn.dropout",
    ]
    assert insertion_points(distil, bert, ("ffn_stream",), None, []) == [
        "distilbert.transformer.layer.0.output_layer_norm",
        "distilbert.transformer.layer.1.output_layer_norm",
    ]
    loaded, _ = load(tiny_model_dir, "bert", "seq2seq")
    points = insertion_points(loaded.model, bert, sites, None, loaded.new_modules)
    assert len(points) == 8  # encoder and decoder, 2 layers, 2 sites
    assert not any("crossattention" in p for p in points)


def test_bert2bert_new_modules_train_and_save(tiny_model_dir, tmp_path):
    import safetensors.torch as st

    loaded, _ = load(tiny_model_dir, "bert", "seq2seq")
    assert any("crossattention" in m for m in loaded.new_modules)
    method = METHODS["pfeiffer"]
    model = method.apply(
        loaded.model, ctx_for(loaded, "bert", "seq2seq", BottleneckConfig(name="pfeiffer"))
    )
    method.save(model, tmp_path)
    keys = list(st.load_file(str(tmp_path / "adapter_model.safetensors")))
    assert any("crossattention" in k for k in keys) and any(".bottleneck." in k for k in keys)
    assert not any("word_embeddings" in k for k in keys)


# --------------------------------------------------------------------------- peft specifics


def test_ia3_feedforward_auto_is_subset_of_explicit_targets():
    from finetune.methods.peft_methods import feedforward_for

    bert = FAMILIES["bert"]
    assert feedforward_for("auto", ["key", "value"], bert) == []
    assert feedforward_for("auto", ["value", "output.dense"], bert) == ["output.dense"]
    assert feedforward_for("auto", "all-linear", bert) == list(bert.ia3_feedforward)


def test_peft_targets_exclude_new_modules(tiny_model_dir):
    loaded, _ = load(tiny_model_dir, "bert", "seq2seq")
    cfg = LoraConfig(name="lora", r=2)
    model = METHODS["lora"].apply(loaded.model, ctx_for(loaded, "bert", "seq2seq", cfg))
    lora = [n for n, _ in model.named_parameters() if "lora_A" in n]
    assert lora and not any("crossattention" in n for n in lora)
    copied = [n for n, _ in model.named_parameters() if "modules_to_save" in n]
    assert any("crossattention" in n for n in copied)


@pytest.mark.parametrize(
    ("name", "family", "kind"),
    [
        ("lora", "bert", "classification"),
        ("dora", "gpt2", "classification"),
        ("rslora", "t5", "classification"),
        ("ia3", "bert", "classification"),
        ("prompt", "bert", "classification"),
        ("prefix", "t5", "seq2seq"),
        ("prompt", "bert", "seq2seq"),
        ("ia3", "gpt2", "causal"),
    ],
)
def test_peft_from_pretrained_loads_saved_adapter(name, family, kind, tiny_model_dir, tmp_path):
    """The saved adapter is a plain peft adapter: PeftModel.from_pretrained alone loads it."""
    import torch
    from peft import PeftModel

    loaded, tokenizer = load(tiny_model_dir, family, kind)
    cfg = method_config(name)
    model = METHODS[name].apply(loaded.model, ctx_for(loaded, family, kind, cfg))
    with torch.no_grad():
        for param in model.parameters():
            if param.requires_grad:
                param.add_(torch.randn_like(param) * 0.1)
    model.eval()
    inputs = batch(tokenizer, kind)
    with torch.no_grad():
        want = model(**inputs).logits
    METHODS[name].save(model, tmp_path)
    fresh, _ = load(tiny_model_dir, family, kind)
    again = PeftModel.from_pretrained(fresh.model, str(tmp_path)).eval()
    with torch.no_grad():
        assert torch.allclose(again(**inputs).logits, want, atol=1e-6)


def test_lora_bias_all_passes_the_guard(tmp_path, runner, tiny_model_dir, sentiment_files):
    train, dev = sentiment_files
    data = classification_recipe(
        tiny_model_dir("bert"),
        train,
        dev,
        tmp_path / "run",
        {"name": "lora", "bias": "all"},
        max_steps=2,
    )
    result = runner.invoke(
        app, ["run", str(write_recipe(tmp_path / "r.yaml", data)), "--no-progress"]
    )
    assert result.exit_code == 0, result.output


def test_prompt_init_text(tmp_path, runner, tiny_model_dir, sentiment_files):
    train, dev = sentiment_files
    data = classification_recipe(
        tiny_model_dir("bert"),
        train,
        dev,
        tmp_path / "run",
        {"name": "prompt", "num_virtual_tokens": 3, "init_text": "a good or bad movie"},
        max_steps=2,
    )
    result = runner.invoke(
        app, ["run", str(write_recipe(tmp_path / "r.yaml", data)), "--no-progress"]
    )
    assert result.exit_code == 0, result.output
    config = json.loads((tmp_path / "run" / "adapter" / "adapter_config.json").read_text())
    assert config["prompt_tuning_init"] == "TEXT"


def test_rejected_combinations_really_fail_in_the_libraries(tiny_model_dir):
    """The reasons in the support table stay true for the installed peft/transformers."""
    import torch
    from peft import PrefixTuningConfig, PromptTuningConfig, get_peft_model

    for family in ("bert", "gpt2", "t5"):
        loaded, tokenizer = load(tiny_model_dir, family)
        model = get_peft_model(
            loaded.model, PrefixTuningConfig(task_type="SEQ_CLS", num_virtual_tokens=2)
        )
        with pytest.raises(ValueError, match="past key values"):
            model(**batch(tokenizer, "classification"))
    loaded, tokenizer = load(tiny_model_dir, "t5")
    model = get_peft_model(
        loaded.model, PromptTuningConfig(task_type="SEQ_CLS", num_virtual_tokens=2)
    )
    with pytest.raises(NotImplementedError), torch.no_grad():
        model(**batch(tokenizer, "classification"))


# --------------------------------------------------------------------------- guards


def _run(runner, tmp_path, tiny_model_dir, sentiment_files, family, method):
    train, dev = sentiment_files
    data = classification_recipe(
        tiny_model_dir(family), train, dev, tmp_path / "run", method, max_steps=2
    )
    return runner.invoke(
        app, ["run", str(write_recipe(tmp_path / "r.yaml", data)), "--no-progress"]
    )


@pytest.mark.parametrize(
    ("method", "message"),
    [
        ({"name": "lora", "target_modules": ["no_such_module"]}, "peft cannot wrap"),
        ({"name": "ia3", "target_modules": ["no_such_module"]}, "peft cannot wrap"),
        ({"name": "houlsby", "layers": [99]}, "no adapter would be added"),
    ],
)
def test_targets_matching_nothing_exit_2(
    method, message, tmp_path, runner, tiny_model_dir, sentiment_files
):
    result = _run(runner, tmp_path, tiny_model_dir, sentiment_files, "bert", method)
    assert result.exit_code == 2, result.output
    assert message in result.output and "Traceback" not in result.output
    assert not (tmp_path / "run" / ".finished").exists()


def test_guard_nothing_trainable(tiny_model_dir):
    from finetune.methods.guards import check_trainable

    loaded, _ = load(tiny_model_dir, "bert")
    for param in loaded.model.parameters():
        param.requires_grad_(False)
    with pytest.raises(FinetuneError, match="no parameter is trainable"):
        check_trainable(loaded.model, METHODS["houlsby"], loaded.new_modules)


def test_guard_only_head_trainable(tiny_model_dir):
    from finetune.methods.base import freeze_all_but
    from finetune.methods.guards import check_trainable

    loaded, _ = load(tiny_model_dir, "bert")
    freeze_all_but(loaded.model, loaded.new_modules)
    with pytest.raises(FinetuneError, match="only the new modules"):
        check_trainable(loaded.model, METHODS["bitfit"], loaded.new_modules)


@pytest.mark.parametrize("name", ["houlsby", "bitfit", "lora"])
def test_guard_backbone_not_frozen(name, tiny_model_dir):
    from finetune.methods.guards import check_trainable

    loaded, _ = load(tiny_model_dir, "bert")
    configs = {"houlsby": BottleneckConfig(name="houlsby"), "lora": LoraConfig(name="lora")}
    model = METHODS[name].apply(
        loaded.model, ctx_for(loaded, "bert", "classification", configs.get(name))
    )
    check_trainable(model, METHODS[name], loaded.new_modules)  # as applied: fine
    leak = next(
        p
        for n, p in model.named_parameters()
        if n.endswith("query.weight") or n.endswith("query.base_layer.weight")
    )
    leak.requires_grad_(True)
    with pytest.raises(FinetuneError, match="backbone parameters would train"):
        check_trainable(model, METHODS[name], loaded.new_modules)


def test_guard_save_without_adapter_tensors(tmp_path):
    import torch
    from safetensors.torch import save_file

    from finetune.methods.guards import check_saved_adapter

    save_file({"classifier.weight": torch.zeros(2, 2)}, str(tmp_path / "adapter_model.safetensors"))
    (tmp_path / "adapter_config.json").write_text(json.dumps({"new_modules": ["classifier"]}))
    with pytest.raises(FinetuneError, match="no adapter tensors"):
        check_saved_adapter(tmp_path, "houlsby")
    (tmp_path / "adapter_config.json").unlink()
    with pytest.raises(FinetuneError, match="wrote no"):
        check_saved_adapter(tmp_path, "houlsby")


def test_load_refuses_adapter_of_another_method(tiny_model_dir, tmp_path):
    loaded, _ = load(tiny_model_dir, "bert")
    ctx = ctx_for(loaded, "bert", "classification", BottleneckConfig(name="houlsby"))
    METHODS["houlsby"].save(METHODS["houlsby"].apply(loaded.model, ctx), tmp_path)
    fresh, _ = load(tiny_model_dir, "bert")
    with pytest.raises(FinetuneError, match="saved by method 'houlsby'"):
        METHODS["pfeiffer"].load(fresh.model, tmp_path, ctx)
