"""The architecture table (finetune/models/registry.py) against the installed transformers and
against the real module trees of a tiny checkpoint of every model_type; unknown model types and
unsupported tasks; the generated README table; decoder padding, the decoder loss window and
mBART language codes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from finetune.cli import app
from finetune.models.registry import ARCHITECTURES, FAMILIES
from tests.conftest import REPO, classification_recipe, write_recipe
from tests.test_generation import generation_recipe

LISTED = {
    "encoder": "bert roberta xlm-roberta deberta deberta-v2 electra distilbert albert mpnet "
    "modernbert camembert",
    "decoder": "gpt2 gpt_neo gpt_neox opt bloom llama mistral qwen2 qwen3 gemma gemma2 phi phi3 "
    "olmo",
    "encoder-decoder": "t5 mt5 umt5 bart mbart marian pegasus",
}


# --------------------------------------------------------------------------- the table itself


def test_every_listed_model_type_is_in_the_table_with_its_shape():
    from transformers.models.auto.configuration_auto import CONFIG_MAPPING_NAMES

    for shape, names in LISTED.items():
        for model_type in names.split():
            assert ARCHITECTURES[model_type].architecture == shape, model_type
    assert set(ARCHITECTURES) <= set(CONFIG_MAPPING_NAMES), "a model_type transformers lacks"
    assert {a.family for a in ARCHITECTURES.values()} == set(FAMILIES) == {"bert", "gpt2", "t5"}


def test_readme_table_and_models_command_are_generated(runner):
    from finetune.models.table import committed_table, render_table

    table = render_table()
    assert committed_table(REPO / "README.md") == table, (
        "README architecture table is stale: python -m finetune.models.table --write"
    )
    result = runner.invoke(app, ["models"])
    assert result.exit_code == 0 and result.output == table
    assert "| `llama` | decoder (gpt2) |" in table and "| `pegasus` |" in table


def _model_dir(root: Path, model_type: str) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    (root / "config.json").write_text(json.dumps({"model_type": model_type}))
    return root


def test_unknown_model_type_exits_2_naming_supported_ones_and_how_to_add(
    tmp_path, runner, sentiment_files
):
    train, dev = sentiment_files
    model = _model_dir(tmp_path / "falcon", "falcon")
    recipe = classification_recipe(model, train, dev, tmp_path / "o", {"name": "lora"})
    result = runner.invoke(app, ["validate", str(write_recipe(tmp_path / "r.yaml", recipe))])
    text = " ".join(result.output.split())
    assert result.exit_code == 2, result.output
    assert "is a 'falcon' model, which finetune does not support" in text
    for model_type in ("deberta-v2", "qwen3", "pegasus"):
        assert model_type in text
    assert "finetune/models/registry.py" in text and "Add a model architecture" in text


@pytest.mark.parametrize(
    ("model_type", "task", "needle"),
    [
        ("pegasus", "classification", "no sequence-classification head"),
        ("deberta-v2", "summarization", "bert2bert cannot warm-start"),
    ],
)
def test_task_the_architecture_cannot_run_is_refused_before_loading(
    model_type, task, needle, tmp_path, runner, sentiment_files
):
    model = _model_dir(tmp_path / model_type, model_type)  # config only: nothing can load
    if task == "classification":
        train, dev = sentiment_files
        data = classification_recipe(model, train, dev, tmp_path / "o", {"name": "lora"})
    else:
        data = generation_recipe(model, task, tmp_path, {"name": "lora"})
    result = runner.invoke(app, ["validate", str(write_recipe(tmp_path / "r.yaml", data))])
    assert result.exit_code == 2 and needle in " ".join(result.output.split()), result.output


def test_bitfit_refused_where_the_layers_have_no_biases(tmp_path, runner, sentiment_files):
    train, dev = sentiment_files
    model = _model_dir(tmp_path / "llama", "llama")
    data = classification_recipe(model, train, dev, tmp_path / "o", {"name": "bitfit"})
    result = runner.invoke(app, ["validate", str(write_recipe(tmp_path / "r.yaml", data))])
    assert result.exit_code == 2 and "no bias terms" in result.output, result.output
    data["method"] = {"name": "lora"}
    data["model"]["family"] = "llama"  # the override accepts every model_type of the table
    result = runner.invoke(app, ["validate", str(write_recipe(tmp_path / "r.yaml", data))])
    assert result.exit_code == 0, result.output


# --------------------------------------------------------------------------- against real modules


def _loaded(tiny_model_dir, model_type: str, kind: str):
    from finetune.models.architectures import resolve_name
    from finetune.models.loading import load_base_model, load_tokenizer

    resolved = resolve_name(str(tiny_model_dir(model_type)))
    tokenizer = load_tokenizer(resolved.path)
    overrides = {"num_labels": 2} if kind == "classification" else {}
    arch = ARCHITECTURES[model_type]
    loaded = load_base_model(resolved, arch, kind, tokenizer, None, overrides)
    return loaded.model.eval(), tokenizer, loaded.new_modules


def _generation_kind(model_type: str) -> str | None:
    from finetune.tasks import model_kind

    arch = ARCHITECTURES[model_type]
    kind = model_kind("summarization", arch)
    return None if arch.kind_reason(kind) else kind


@pytest.mark.slow
@pytest.mark.parametrize("model_type", list(ARCHITECTURES))
def test_table_entry_matches_the_real_modules(model_type, tiny_model_dir):
    """LoRA/IA3 targets and MLP names exist; bottleneck sites are found once per layer (both
    stacks of an encoder-decoder) and start as the identity; BitFit's flag matches the biases."""
    import torch

    from finetune.methods import METHODS
    from finetune.methods.base import MethodContext
    from finetune.methods.bottleneck import insertion_points
    from tests.test_methods import method_config

    arch = ARCHITECTURES[model_type]
    kind = _generation_kind(model_type) or "classification"
    model, tokenizer, new = _loaded(tiny_model_dir, model_type, kind)
    names = [n for n, _ in model.named_modules()]
    for target in (*arch.lora_targets, *arch.ia3_targets):
        if arch is not FAMILIES["bert"]:  # bert's entry also names DistilBERT's modules
            assert any(n.endswith(target) for n in names), (model_type, target)
    assert any(n.endswith(m) for m in arch.mlp_modules for n in names), model_type
    config = getattr(model.config, "encoder", model.config)  # bert2bert: the encoder's
    layers = getattr(config, "num_hidden_layers", None) or getattr(config, "num_layers", None)
    if model_type == "albert":
        layers = config.inner_group_num  # one shared layer, applied num_hidden_layers times
    stacks = 2 if kind == "seq2seq" else 1  # encoder-decoders and bert2bert: both stacks
    enc = tokenizer(["the movie was good", "a dull plot"], return_tensors="pt", padding=True)
    inputs = {k: v for k, v in enc.items() if k in ("input_ids", "attention_mask")}
    if kind == "seq2seq":
        inputs["decoder_input_ids"] = torch.tensor([[2, 5, 6], [2, 7, 8]])
    sites = {"houlsby": ("attention_output", "ffn_output"), "pfeiffer": ("ffn_stream",)}
    for name, wanted in sites.items():
        model, _, new = _loaded(tiny_model_dir, model_type, kind)
        with torch.no_grad():
            before = model(**inputs).logits  # bert2bert's new cross-attention differs per load
        found = insertion_points(model, arch, wanted, None, new)
        assert len(found) == len(wanted) * layers * stacks, (model_type, name, found)
        ctx = MethodContext(arch, kind, method_config(name), list(new))
        adapted = METHODS[name].apply(model, ctx)
        with torch.no_grad():
            after = adapted(**inputs).logits
        assert torch.allclose(after, before, atol=1e-5), (model_type, name)
    heads = ("lm_head", "classification_head", "score", *new)
    model, _, new = _loaded(tiny_model_dir, model_type, kind)
    biases = [
        n
        for n, _ in model.named_parameters()
        if n.endswith(".bias") and not any(n.startswith(h + ".") for h in heads)
    ]
    assert bool(biases) == arch.has_biases, (model_type, biases[:3])
