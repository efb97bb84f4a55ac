"""Generation internals: GPT-2 loss mask, left-padded batched generation, data layouts,
bert2bert's new modules training under LoRA."""

from __future__ import annotations

from pathlib import Path

import pytest

from finetune.commands.build import make_task
from finetune.data.readers import LocalSource, Table, read_local
from finetune.errors import DataError
from finetune.models import FAMILIES
from finetune.models.names import resolve_name
from finetune.recipe.schema import Recipe
from finetune.tasks.base import Example
from finetune.tasks.generation import IGNORE
from tests.conftest import write_recipe
from tests.generation_data import translation_rows, write_aligned, write_jsonl


def make_recipe(model: str, task: dict, **gen) -> Recipe:
    return Recipe.model_validate(
        {
            "model": {"name": model},
            "task": task,
            "data": {"train": "unused.jsonl"},
            "method": {"name": "lora"},
            "train": {"max_length": 64, "max_target_length": 16},
            "eval": {"generation": {"max_new_tokens": 10, **gen}},
        }
    )


def task_and_model(model_dir: Path, family: str, task: dict, **gen):
    from finetune.models.loading import load_base_model, load_tokenizer

    recipe = make_recipe(str(model_dir), task, **gen)
    task_obj = make_task(recipe, FAMILIES[family])
    task_obj.tokenizer = load_tokenizer(str(model_dir))
    loaded = load_base_model(
        resolve_name(str(model_dir)), FAMILIES[family], task_obj.model_kind(), task_obj.tokenizer
    )
    loaded.model.eval()
    return task_obj, loaded


SUMMARY = {"type": "summarization", "text": "dialogue", "summary": "summary"}
TRANSLATION = {"type": "translation"}
SOURCES = [
    "hello how are you doing today a red dog runs in the park",
    "a cat",
    "fine thanks talk about a small woman walks in the street with two people",
    "the old man walks",
]


def test_gpt2_labels_mask_prompt_and_padding(tiny_model_dir):
    from finetune.models.loading import load_tokenizer

    model_dir = tiny_model_dir("gpt2")
    task = make_task(make_recipe(str(model_dir), SUMMARY), FAMILIES["gpt2"])
    task.tokenizer = tok = load_tokenizer(str(model_dir))
    examples = [
        Example(source=SOURCES[0], target=["a red dog runs"], where="row 1"),
        Example(source=SOURCES[1], target=["a cat"], where="row 2"),
    ]
    features = task.encode(examples, training=True)
    for feat, ex in zip(features, examples):
        prompt = tok(ex.source + "\nTL;DR:", add_special_tokens=False)["input_ids"]
        target = tok(" " + ex.target[0], add_special_tokens=False)["input_ids"]
        assert feat["input_ids"] == prompt + target + [tok.eos_token_id]
        assert feat["labels"] == [IGNORE] * len(prompt) + target + [tok.eos_token_id]
        assert "prompt_ids" not in feat  # the training batch holds only model inputs
    batch = task.collate(features)
    short = batch["attention_mask"][1].sum().item()
    labels = batch["labels"]  # cut to the window from the first label on (logits_to_keep)
    assert batch["logits_to_keep"] == labels.shape[1] < batch["input_ids"].shape[1]
    assert (labels[1, labels.shape[1] - (batch["input_ids"].shape[1] - short) :] == IGNORE).all()
    assert batch["input_ids"][1, -1].item() == tok.pad_token_id
    # the model's own loss equals cross-entropy over target tokens only
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(model_dir).eval()
    batch.pop("idx")
    loss = model(**batch).loss
    manual = task.example_losses(model, batch)
    counts = (batch["labels"][:, 1:] != IGNORE).sum(dim=1)
    weighted = sum(m * c for m, c in zip(manual, counts.tolist())) / counts.sum().item()
    assert loss.item() == pytest.approx(weighted, rel=1e-5)


def test_gpt2_eval_features_left_pad_prompts(tiny_model_dir):
    from finetune.models.loading import load_tokenizer

    model_dir = tiny_model_dir("gpt2")
    task = make_task(make_recipe(str(model_dir), TRANSLATION), FAMILIES["gpt2"])
    task.tokenizer = tok = load_tokenizer(str(model_dir))
    examples = [Example(source=s, target=None, where="") for s in SOURCES[:2]]
    batch = task.collate(task.encode(examples, training=False))
    assert set(batch) == {"prompt_ids", "prompt_mask", "idx"}
    assert batch["prompt_mask"][1, 0].item() == 0 and batch["prompt_mask"][1, -1].item() == 1
    german = tok("\nGerman:", add_special_tokens=False)["input_ids"]
    assert batch["prompt_ids"][1, -len(german) :].tolist() == german


@pytest.mark.parametrize("num_beams", [1, 3])
@pytest.mark.parametrize("family", ["gpt2", "t5", "bert"])
def test_batched_generation_equals_one_by_one(family, num_beams, tiny_model_dir):
    import torch

    task, loaded = task_and_model(tiny_model_dir(family), family, SUMMARY, num_beams=num_beams)
    examples = [Example(source=s, target=None, where="") for s in SOURCES]
    features = task.encode(examples, training=False)
    if family == "bert":  # fresh cross-attention barely reads the input: make it matter
        with torch.no_grad():
            for name, param in loaded.model.named_parameters():
                if "crossattention.self" in name:
                    param.mul_(30)
    with torch.inference_mode():
        together = task.generate(loaded.model, task.collate(features))
        alone = [task.generate(loaded.model, task.collate([f])) for f in features]
    assert together == [a[0] for a in alone]
    assert len(set(together)) > 1  # not a degenerate constant output
    if family == "gpt2":  # the prompt is cut off the output
        assert not any(
            t.startswith(s.split()[0] + " " + s.split()[1]) for t, s in zip(together, SOURCES)
        )


def test_generation_sub_batches_match_whole_batch(tiny_model_dir):
    import torch

    task, loaded = task_and_model(tiny_model_dir("gpt2"), "gpt2", SUMMARY)
    examples = [Example(source=s, target=None, where="") for s in SOURCES]
    batch = task.collate(task.encode(examples, training=False))
    with torch.inference_mode():
        whole = task.generate(loaded.model, batch)
        task.settings.decoding.batch_size = 1
        split = task.generate(loaded.model, batch)
    assert whole == split


def test_t5_prefixes_and_labels(tiny_model_dir):
    from finetune.models.loading import load_tokenizer

    model_dir = tiny_model_dir("t5")
    task = make_task(make_recipe(str(model_dir), TRANSLATION), FAMILIES["t5"])
    assert task.prefix() == "translate English to German: "
    assert make_task(make_recipe(str(model_dir), SUMMARY), FAMILIES["t5"]).prefix() == (
        "summarize: "
    )
    custom = make_task(make_recipe(str(model_dir), {**SUMMARY, "prefix": ""}), FAMILIES["t5"])
    assert custom.prefix() == ""
    gpt2 = make_task(make_recipe(str(model_dir), SUMMARY), FAMILIES["gpt2"])
    assert gpt2.prefix() == ""
    task.tokenizer = tok = load_tokenizer(str(model_dir))
    feats = task.encode([Example(source="a dog", target=["ein hund"], where="")], True)
    assert feats[0]["labels"] == tok("ein hund")["input_ids"]  # ends with </s>
    assert feats[0]["labels"][-1] == tok.eos_token_id
    batch = task.collate(feats + task.encode([Example("a", ["ein"], "")], True))
    assert batch["labels"][1, -1].item() == IGNORE


# --------------------------------------------------------------------------- data layouts


def _examples(task_spec: dict, table: Table, family: str = "t5") -> list[Example]:
    task = make_task(make_recipe("unused", task_spec), FAMILIES[family])
    return task.examples(table, "train")


def test_summary_references_from_list_column_and_several_columns():
    rows = [{"d": "x y", "s": ["ref a", "ref b"]}, {"d": "z", "s": "only"}]
    got = _examples({"type": "summarization", "text": "d", "summary": "s"}, Table(rows, "f"))
    assert [e.target for e in got] == [["ref a", "ref b"], ["only"]]
    rows = [{"d": "x", "s1": "one", "s2": "two"}, {"d": "y", "s1": "one", "s2": ""}]
    spec = {"type": "summarization", "text": "d", "summary": ["s1", "s2"]}
    assert [e.target for e in _examples(spec, Table(rows, "f"))] == [["one", "two"], ["one"]]
    with pytest.raises(DataError, match="f line 2: no reference text"):
        _examples(spec, Table([{"d": "x", "s1": "", "s2": None}], "f"))


def test_translation_dict_column_and_errors():
    rows = [{"translation": {"de": "ein hund", "en": "a dog"}}]
    spec = {"type": "translation", "translation_column": "translation"}
    got = _examples(spec, Table(rows, "hub"))
    assert (got[0].source, got[0].target) == ("a dog", ["ein hund"])
    reverse = _examples({**spec, "source_lang": "de", "target_lang": "en"}, Table(rows, "hub"))
    assert (reverse[0].source, reverse[0].target) == ("ein hund", ["a dog"])
    with pytest.raises(DataError, match="has no 'fr' entry"):
        _examples({**spec, "target_lang": "fr"}, Table(rows, "hub"))
    with pytest.raises(DataError, match=r"column 'translation' holds \{lang: text\} dicts"):
        _examples({"type": "translation"}, Table(rows, "hub"))


def test_translation_aligned_text_files(tmp_path):
    pattern = write_aligned(tmp_path, "train", translation_rows(5, seed=0))
    table = read_local(LocalSource(path=pattern), None, None, ["en", "de"])
    got = _examples({"type": "translation"}, table)
    assert len(got) == 5 and got[0].target[0].split()[0] == "ein"


# --------------------------------------------------------------------------- bert2bert


def test_bert2bert_cross_attention_trains_and_is_saved_under_lora(
    tmp_path, tiny_model_dir, monkeypatch
):
    import finetune.commands.run as pipeline
    from tests.test_generation import generation_recipe

    changed: list[str] = []
    original = pipeline.fit

    def spy(model, *args, **kwargs):
        before = {n: p.detach().clone() for n, p in model.named_parameters()}
        result = original(model, *args, **kwargs)
        changed.extend(n for n, p in model.named_parameters() if not p.equal(before[n]))
        return result

    monkeypatch.setattr(pipeline, "fit", spy)
    data = generation_recipe(tiny_model_dir("bert"), "summarization", tmp_path, {"name": "lora"})
    pipeline.run(write_recipe(tmp_path / "r.yaml", data), progress=False)
    for layer in (0, 1):
        assert any(f"layer.{layer}.crossattention." in n and "query.weight" in n for n in changed)
    assert any("predictions.transform" in n for n in changed)
    assert not any("embeddings" in n or ".attention.self.query.weight" in n for n in changed)
    from safetensors.torch import load_file

    saved = load_file(str(tmp_path / "run" / "adapter" / "adapter_model.safetensors"))
    assert sum("crossattention.self.key.weight" in k for k in saved) == 2
    assert any("predictions.transform.dense.weight" in k for k in saved)


def test_local_dialogsum_copy_reads(tmp_path):
    from tests.conftest import REPO

    table = read_local(LocalSource(path=str(REPO / "recipes/data/dialogsum/sample.jsonl")), None)
    got = _examples({"type": "summarization", "text": "dialogue"}, table, family="bert")
    assert len(got) == 300 and all(e.target[0] for e in got)
    write_jsonl(tmp_path / "x.jsonl", [{"dialogue": "a", "summary": "b"}])
