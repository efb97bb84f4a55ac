"""The architecture table (finetune/models/registry.py) against the installed transformers and
against the real module trees of a tiny checkpoint of every model_type; unknown model types and
unsupported tasks; the generated README table; decoder padding, the decoder loss window and
mBART language codes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from finetune.cli import app
from finetune.models import ARCHITECTURES, FAMILIES
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
            assert ARCHITECTURES[model_type].shape == shape, model_type
    assert set(ARCHITECTURES) <= set(CONFIG_MAPPING_NAMES), "a model_type transformers lacks"
    assert {a.family for a in ARCHITECTURES.values()} == set(FAMILIES) == {"bert", "gpt2", "t5"}


def test_readme_table_and_models_command_are_generated(runner):
    from finetune.docs.architectures import committed_table, render_table

    table = render_table()
    assert committed_table(REPO / "README.md") == table, (
        "README architecture table is stale: python -m finetune.docs.architectures --write"
    )
    result = runner.invoke(app, ["models"])
    assert result.exit_code == 0 and result.output.startswith(table)
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
    assert "finetune/models/encoders.py" in text and "Add a model architecture" in text


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
    from finetune.models.loading import load_base_model, load_tokenizer
    from finetune.models.names import resolve_name

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


# --------------------------------------------------------------------------- task behaviour


def _task(tiny_model_dir, model_type: str, task: dict, method: str = "lora"):
    from finetune.models.loading import load_tokenizer
    from finetune.recipe.schema import Recipe
    from finetune.setup.task import make_task

    recipe = Recipe.model_validate(
        {
            "model": {"name": str(tiny_model_dir(model_type))},
            "task": task,
            "data": {"train": "unused.jsonl"},
            "method": {"name": method},
            "train": {"max_length": 64, "max_target_length": 16},
        }
    )
    task_obj = make_task(recipe, ARCHITECTURES[model_type])
    task_obj.tokenizer = load_tokenizer(str(tiny_model_dir(model_type)))
    return task_obj


SUMMARY = {"type": "summarization", "text": "dialogue", "summary": "summary"}
ROWS = [
    ("hello how are you doing today a red dog runs in the park", "a dog runs"),
    ("a cat", "cat"),
]


def _features(task, training: bool = True):
    from finetune.tasks.base import Example

    examples = [Example(source=s, target=[t], where=f"row {i}") for i, (s, t) in enumerate(ROWS)]
    return task.encode(examples, training=training)


@pytest.mark.parametrize("model_type", ["gpt2", "llama"])
def test_decoder_loss_computed_only_where_labels_are_is_the_full_loss(model_type, tiny_model_dir):
    """Training batches cut logits (and labels) to the window from the first label on; the loss
    equals the full-sequence loss, and so does evaluation's per-example loss."""
    import torch

    from finetune.models.loading import load_base_model
    from finetune.models.names import resolve_name

    task = _task(tiny_model_dir, model_type, SUMMARY)
    model = load_base_model(
        resolve_name(str(tiny_model_dir(model_type))), task.family, "causal", task.tokenizer
    ).model.eval()
    batch = task.collate(_features(task))
    full_labels = task.collate([{**f} for f in _features(task)])
    keep = batch.pop("logits_to_keep")
    full_labels.pop("logits_to_keep")
    width = batch["input_ids"].shape[1]
    assert keep < width and batch["labels"].shape[1] == keep  # the prompt's logits are skipped
    with torch.no_grad():
        cut = model(**{k: v for k, v in batch.items() if k != "idx"}, logits_to_keep=keep)
        labels = _features(task)
        from finetune.tasks.padding import IGNORE, pad_rows

        whole = pad_rows([f["labels"] for f in labels], IGNORE)
        reference = model(
            input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], labels=whole
        )
    assert cut.logits.shape[1] == keep and reference.logits.shape[1] == width
    assert torch.allclose(cut.loss, reference.loss, atol=1e-6)
    eval_batch = task.collate(_features(task, training=False))
    assert "logits_to_keep" not in eval_batch
    with torch.no_grad():
        losses = task.example_losses(model, eval_batch)
        logits = reference.logits[:, :-1]
        per_token = torch.nn.functional.cross_entropy(
            logits.transpose(1, 2), whole[:, 1:], ignore_index=IGNORE, reduction="none"
        )
        expected = per_token.sum(1) / (whole[:, 1:] != IGNORE).sum(1)
    assert losses == pytest.approx(expected.tolist(), abs=1e-5)


def test_prompt_tuning_keeps_full_labels(tiny_model_dir):
    """peft pads labels for virtual tokens: the training batch must not be cut for it."""
    task = _task(tiny_model_dir, "gpt2", SUMMARY, method="prompt")
    batch = task.collate(_features(task))
    assert "logits_to_keep" not in batch and batch["labels"].shape == batch["input_ids"].shape


def test_decoder_prompts_start_with_bos_where_the_tokenizer_adds_one(tiny_model_dir):
    llama = _task(tiny_model_dir, "llama", SUMMARY)
    gpt2 = _task(tiny_model_dir, "gpt2", SUMMARY)
    assert _features(llama)[0]["input_ids"][0] == llama.tokenizer.bos_token_id
    assert _features(gpt2)[0]["input_ids"][0] != gpt2.tokenizer.bos_token_id


def test_t5_alone_gets_task_prefixes(tiny_model_dir):
    assert _task(tiny_model_dir, "t5", SUMMARY).prefix() == "summarize: "
    assert _task(tiny_model_dir, "mt5", SUMMARY).prefix() == ""
    assert _task(tiny_model_dir, "bart", SUMMARY).prefix() == ""


def test_seq2seq_targets_use_the_tokenizers_own_special_tokens(tiny_model_dir):
    """BART's targets start with <s> (its generation starts there); T5's end with </s> only."""
    bart = _task(tiny_model_dir, "bart", SUMMARY)
    labels = _features(bart)[0]["labels"]
    assert labels[0] == bart.tokenizer.bos_token_id and labels[-1] == bart.tokenizer.eos_token_id
    t5 = _task(tiny_model_dir, "t5", SUMMARY)
    labels = _features(t5)[0]["labels"]
    assert labels[-1] == t5.tokenizer.eos_token_id and t5.tokenizer.eos_token_id not in labels[:-1]


@pytest.mark.parametrize("padding_side", ["right", "left"])
def test_decoder_classifies_from_the_last_real_token(padding_side, tiny_model_dir):
    """A Llama tokenizer has no pad token: EOS stands in; a padded row's logits equal the row
    alone, with right or left padding."""
    import torch

    from finetune.models.loading import load_base_model, load_tokenizer
    from finetune.models.names import resolve_name

    path = tiny_model_dir("llama")
    tokenizer = load_tokenizer(str(path))
    assert tokenizer.pad_token == tokenizer.eos_token
    tokenizer.padding_side = padding_side
    model = load_base_model(
        resolve_name(str(path)),
        ARCHITECTURES["llama"],
        "classification",
        tokenizer,
        None,
        {"num_labels": 2},
    ).model.eval()
    assert model.config.pad_token_id == tokenizer.pad_token_id
    texts = ["a cat", "hello how are you doing today a red dog runs in the park"]
    with torch.no_grad():
        batch = model(**tokenizer(texts, return_tensors="pt", padding=True)).logits
        alone = model(**tokenizer(texts[:1], return_tensors="pt")).logits
    assert torch.allclose(batch[0], alone[0], atol=1e-5)


def test_mbart_language_codes_from_task_languages(tiny_model_dir):
    """en/de -> the tokenizer's en_XX/de_DE: the source is wrapped in en_XX, the target in
    de_DE, and generation starts from de_DE (mBART-cc25 convention: decoder_start_token_id)."""
    task = _task(tiny_model_dir, "mbart", {"type": "translation", "source_lang": "en"})
    tok = task.tokenizer
    en, de = tok.convert_tokens_to_ids("en_XX"), tok.convert_tokens_to_ids("de_DE")
    feature = _features(task)[0]
    assert feature["input_ids"][-1] == en and feature["labels"][-1] == de
    assert task.generation_start() == {"decoder_start_token_id": de}


def test_mbart_unknown_language_is_a_clear_error(tiny_model_dir):
    from finetune.errors import ModelError

    with pytest.raises(
        ModelError, match=r"task\.target_lang: 'xx' maps to no language code"
    ) as exc:
        _task(tiny_model_dir, "mbart", {"type": "translation", "target_lang": "xx"})
    assert "de_DE" in exc.value.fix and "en_XX" in exc.value.fix
