"""Issue #9 findings 3, 4, 5, 6, 10, 11 and 22: what the tasks compute and keep.

Issue #9 finding 3: text pairs keep their segment ids (token_type_ids) through encode, collate,
eval, predict and merge parity; GPT-2 pairs get a separator between the two texts.
Issue #9 finding 4: BLEU for zh/ja/ko targets uses the target language's tokenizer.
Issue #9 finding 5: ROUGE keeps non-ASCII characters (Unicode-aware tokens, Porter for English).
Issue #9 finding 6: macro-F1 over the classes present; per-class report + confusion matrix file.
Issue #9 finding 10: eval of an eval_fraction run takes its labels from run.json.
Issue #9 finding 11: string labels are kept as written (whitespace stripped only).
Issue #9 finding 22: eval.generation.max_new_tokens defaults to train.max_target_length.
"""

from __future__ import annotations

import json
import random
import string
from pathlib import Path

import pytest

from finetune.models import FAMILIES
from finetune.recipe.schema import Recipe
from finetune.setup.task import make_task
from finetune.tasks.base import Example
from tests.conftest import classification_recipe, write_csv, write_recipe

PAIR_TASK = {"type": "classification", "text": "text", "text_pair": "pair", "label": "label"}


def pair_task(model_dir: Path, family: str):
    """A classification task with text pairs on a tiny model, its tokenizer loaded."""
    from finetune.models.loading import load_tokenizer

    recipe = Recipe.model_validate(
        {
            "model": {"name": str(model_dir)},
            "task": PAIR_TASK,
            "data": {"train": "unused.csv"},
            "method": {"name": "lora"},
            "train": {"max_length": 32},
        }
    )
    task = make_task(recipe, FAMILIES[family])
    task.tokenizer = load_tokenizer(str(model_dir))
    task.state.labels = ["0", "1"]
    return task


PAIRS = [
    Example(source="good movie", pair="it is great", target=("int", "1"), where="row 1"),
    Example(source="bad", pair="the plot was very dull", target=("int", "0"), where="row 2"),
]


# --------------------------------------------------------------------------- finding 3


def test_pair_segment_ids_are_kept_through_collate_and_eval(tiny_model_dir):
    """Finding 3: BERT pairs keep token_type_ids (segment B = 1, padding 0) into the model."""
    import torch

    task = pair_task(tiny_model_dir("bert"), "bert")
    direct = task.tokenizer(["good movie"], ["it is great"])
    features = task.encode(PAIRS, training=True)
    assert features[0]["token_type_ids"] == direct["token_type_ids"][0]
    assert 1 in features[0]["token_type_ids"]
    batch = task.collate(features)
    assert batch["token_type_ids"].shape == batch["input_ids"].shape
    # the shorter row is padded with segment 0
    short = int(batch["attention_mask"][0].sum())
    assert batch["token_type_ids"][0, short:].eq(0).all()

    seen = {}

    class Spy(torch.nn.Module):
        def forward(self, **inputs):
            seen.update(inputs)
            logits = torch.zeros(inputs["input_ids"].shape[0], 2)
            return type("Out", (), {"logits": logits})()

    task.eval_batch(Spy(), batch, predict=True)
    assert torch.equal(seen["token_type_ids"], batch["token_type_ids"])


def test_gpt2_pairs_have_no_segment_ids(tiny_model_dir):
    """Finding 3: only tokenizers that return token_type_ids get them (GPT-2 does not)."""
    task = pair_task(tiny_model_dir("gpt2"), "gpt2")
    batch = task.collate(task.encode(PAIRS, training=True))
    assert "token_type_ids" not in batch


def test_gpt2_pairs_have_a_separator(tiny_model_dir):
    """Finding 3: GPT-2 adds no special tokens between a pair; we put a separator there."""
    task = pair_task(tiny_model_dir("gpt2"), "gpt2")
    ids = task.encode(PAIRS[:1], training=True)[0]["input_ids"]
    text = task.tokenizer.decode(ids)
    assert text == "good movie\nit is great"


def test_t5_and_bert_pairs_keep_the_tokenizers_own_separator(tiny_model_dir):
    """Finding 3: tokenizers that separate pairs themselves get no extra separator text."""
    for family in ("bert", "t5"):
        task = pair_task(tiny_model_dir(family), family)
        ids = task.encode(PAIRS[:1], training=True)[0]["input_ids"]
        assert ids == task.tokenizer("good movie", "it is great")["input_ids"], family


def test_pair_run_merge_parity_and_predict_use_segment_ids(
    tmp_path, runner, tiny_model_dir, monkeypatch
):
    """Finding 3: training, eval, merge parity and predict all feed token_type_ids to BERT."""
    import functools

    from transformers.models.bert.modeling_bert import BertForSequenceClassification

    from finetune.cli import app
    from tests.tiny_models import sentiment_rows

    rows = [
        {"text": r["text"], "pair": "it is " + r["text"].split()[-1], "label": r["label"]}
        for r in sentiment_rows(32, seed=3)
    ]
    train = write_csv(tmp_path / "train.csv", rows)
    out = tmp_path / "run"
    data = classification_recipe(tiny_model_dir("bert"), train, train, out, {"name": "lora"})
    data["task"] = PAIR_TASK
    data["train"]["epochs"] = 1
    recipe = write_recipe(tmp_path / "r.yaml", data)

    calls: list[bool] = []  # one per forward: were segment ids passed?
    original = BertForSequenceClassification.forward

    @functools.wraps(original)
    def spy(self, *args, **kwargs):
        calls.append(kwargs.get("token_type_ids") is not None)
        return original(self, *args, **kwargs)

    monkeypatch.setattr(BertForSequenceClassification, "forward", spy)

    def invoke(*args: str) -> object:
        calls.clear()
        result = runner.invoke(app, list(args))
        assert result.exit_code == 0, result.output
        assert calls and all(calls), (args[0], calls)
        return result

    invoke("run", str(recipe), "--no-progress")
    invoke("eval", str(out))
    invoke("merge", str(out), "--out", str(tmp_path / "merged"))
    # predict of a pair gives the same probability as the end-of-training predictions
    saved = json.loads((out / "predictions.jsonl").read_text().splitlines()[0])
    result = invoke("predict", str(out), "--text", saved["text"] + "\t" + saved["text_pair"])
    line = next(json.loads(x) for x in result.stdout.splitlines() if x.startswith("{"))
    assert line["probability"] == pytest.approx(saved["probability"], abs=1e-5)
    # one text alone would be scored against an empty pair: refused, naming the input
    alone = runner.invoke(app, ["predict", str(out), "--text", "ok", "--text", saved["text"]])
    assert alone.exit_code == 2 and "input 1: this run was trained on text pairs" in alone.output
    assert "separated by a tab" in alone.output and "Traceback" not in alone.output


# --------------------------------------------------------------------------- finding 4


def test_bleu_uses_the_target_languages_tokenizer():
    """Finding 4: identical Chinese outputs score 100 (13a gave 0.0); signature says tok:zh."""
    from finetune.tasks.metrics import bleu

    hyps = ["我喜欢吃苹果。", "今天天气很好，我们去公园散步吧。"]
    got = bleu(hyps, [[h] for h in hyps], target_lang="zh")
    assert got["bleu"] == pytest.approx(100.0)
    assert "tok:zh" in got["bleu_signature"]
    # other languages keep 13a
    assert "tok:13a" in bleu(["a b c d"], [["a b c d"]], target_lang="de")["bleu_signature"]
    # region suffixes are understood
    assert "tok:zh" in bleu(hyps, [[h] for h in hyps], target_lang="zh-CN")["bleu_signature"]


@pytest.mark.parametrize("lang", ["ja", "ko"])
def test_bleu_japanese_korean_use_mecab_or_say_char(lang):
    """Finding 4: ja/ko use sacreBLEU's MeCab tokenizers; without them, 'char' (signed)."""
    import importlib.util

    from finetune.tasks.metrics import bleu

    hyps = ["今日は良い天気です。" if lang == "ja" else "오늘은 날씨가 좋습니다."]
    got = bleu(hyps, [hyps], target_lang=lang)
    assert got["bleu"] == pytest.approx(100.0)
    module = "MeCab" if lang == "ja" else "mecab_ko"
    want = f"tok:{lang}-mecab" if importlib.util.find_spec(module) else "tok:char"
    assert want in got["bleu_signature"], got["bleu_signature"]


def test_translation_task_passes_target_language(tiny_model_dir):
    """Finding 4: the translation task scores with its task.target_lang."""
    recipe = Recipe.model_validate(
        {
            "model": {"name": str(tiny_model_dir("t5"))},
            "task": {"type": "translation", "source_lang": "en", "target_lang": "zh"},
            "data": {"train": "unused.jsonl"},
            "method": {"name": "lora"},
        }
    )
    task = make_task(recipe, FAMILIES["t5"])
    refs = ["我喜欢吃苹果。"]
    got = task.metrics(refs, [Example(source="x", target=refs, where="row 1")])
    assert got["bleu"] == pytest.approx(100.0) and "tok:zh" in got["bleu_signature"]


# --------------------------------------------------------------------------- finding 5


def test_rouge_keeps_non_ascii_text():
    """Finding 5: identical Chinese summaries score 100 (were 0.0); 'läuft' is one token."""
    from finetune.tasks.metrics import rouge, rouge_tokens

    zh = "我们明天在公园见面。"
    got = rouge([zh], [[zh]])
    assert all(got[key] == pytest.approx(100.0) for key in got), got
    # partial overlap in Chinese gives partial credit (characters are the units)
    assert 0 < rouge(["我们明天见面"], [["我们今天见面"]])["rouge1"] < 100
    assert rouge_tokens("Er läuft schnell") == ["er", "läuft", "schnell"]
    # 'l uft' used to match 'läuft' exactly
    assert rouge(["l uft"], [["läuft"]])["rouge1"] == 0.0
    # English keeps Porter stemming, exactly as rouge_score tokenises it
    from rouge_score import tokenizers

    default = tokenizers.DefaultTokenizer(use_stemmer=True)
    text = "The dogs were running quickly, weren't they? 3.5 km in 2024!"
    assert rouge_tokens(text) == default.tokenize(text)
    rng = random.Random(0)
    for _ in range(500):  # any ASCII text: exactly rouge_score's tokens, so English is unchanged
        text = "".join(rng.choice(string.printable) for _ in range(rng.randint(0, 60)))
        assert rouge_tokens(text) == default.tokenize(text), text


# --------------------------------------------------------------------------- finding 6


def cls_task(labels: list[str]):
    recipe = Recipe.model_validate(
        {
            "model": {"name": "unused"},
            "task": {"type": "classification"},
            "data": {"train": "unused.csv"},
            "method": {"name": "lora"},
        }
    )
    task = make_task(recipe, FAMILIES["bert"])
    task.state.labels = labels
    return task


def test_macro_f1_uses_classes_present():
    """Finding 6: perfect predictions with one class absent from eval give F1 1.0 (was 0.667)."""
    task = cls_task(["a", "b", "c"])
    examples = [Example(source="x", target=("str", v), where="r") for v in ["a", "b", "a", "b"]]
    preds = [(0, [1, 0, 0]), (1, [0, 1, 0]), (0, [1, 0, 0]), (1, [0, 1, 0])]
    assert task.metrics(preds, examples)["f1_macro"] == pytest.approx(1.0)


def test_classification_report_per_class_and_confusion_matrix():
    """Finding 6: per-class precision/recall/F1/support and a labelled confusion matrix."""
    task = cls_task(["a", "b", "c"])
    examples = [Example(source="x", target=("str", v), where="r") for v in ["a", "a", "b", "b"]]
    preds = [(0, []), (1, []), (1, []), (1, [])]
    report = task.report(preds, examples)
    assert report["labels"] == ["a", "b", "c"]
    assert report["confusion_matrix"] == [[1, 1, 0], [0, 2, 0], [0, 0, 0]]
    assert report["per_class"]["a"] == {
        "precision": 1.0,
        "recall": 0.5,
        "f1": pytest.approx(2 / 3),
        "support": 2,
    }
    assert report["per_class"]["b"]["precision"] == pytest.approx(2 / 3)
    assert report["per_class"]["c"]["support"] == 0
    assert report["macro_f1_classes"] == ["a", "b"]


def test_run_writes_classification_report(tmp_path, runner, tiny_model_dir, sentiment_files):
    """Finding 6: the run directory holds classification_report.json, and eval writes one."""
    from finetune.cli import app

    train, dev = sentiment_files
    out = tmp_path / "run"
    data = classification_recipe(tiny_model_dir("bert"), train, dev, out, {"name": "lora"})
    data["train"]["epochs"] = 1
    result = runner.invoke(app, ["run", str(write_recipe(tmp_path / "r.yaml", data))])
    assert result.exit_code == 0, result.output
    report = json.loads((out / "classification_report.json").read_text())
    metrics = json.loads((out / "metrics.json").read_text())
    matrix = report["confusion_matrix"]
    assert sum(map(sum, matrix)) == metrics["samples"] == 40
    assert sum(matrix[i][i] for i in range(len(matrix))) / 40 == pytest.approx(metrics["accuracy"])
    result = runner.invoke(app, ["eval", str(out)])
    assert result.exit_code == 0, result.output
    assert json.loads((out / "classification_report_eval.json").read_text()) == report


# --------------------------------------------------------------------------- finding 10


def test_eval_of_eval_fraction_run_takes_labels_from_run_json(tmp_path, runner, tiny_model_dir):
    """Finding 10: after the train file changes, eval still uses the trained head's labels."""
    from finetune.cli import app
    from tests.tiny_models import sentiment_rows

    rows = [{**r, "label": ["neg", "pos"][r["label"]]} for r in sentiment_rows(40, seed=4)]
    train = write_csv(tmp_path / "train.csv", rows)
    out = tmp_path / "run"
    data = classification_recipe(tiny_model_dir("bert"), train, train, out, {"name": "lora"})
    data["data"] = {"train": str(train), "eval_fraction": 0.25}
    data["train"]["epochs"] = 1
    result = runner.invoke(app, ["run", str(write_recipe(tmp_path / "r.yaml", data))])
    assert result.exit_code == 0, result.output
    assert json.loads((out / "run.json").read_text())["task_state"]["labels"] == ["neg", "pos"]

    # the train file gains a class that sorts first (in a row that stays in the training part):
    # re-learning the labels would shift every id by one under the trained head
    from finetune.setup.data import hold_out

    kept, _ = hold_out(list(range(len(rows) + 1)), 0.25, 0)
    changed = list(rows)
    changed.insert(kept[0], {"text": "a movie", "label": "amazing"})
    write_csv(tmp_path / "train.csv", changed)
    result = runner.invoke(app, ["eval", str(out)])
    assert result.exit_code == 0, result.output
    from finetune.setup.data import saved_split
    from finetune.setup.run_setup import RunSetup

    run = RunSetup.from_run_dir(out)
    examples = saved_split(run.task, run.recipe, "eval", None)
    assert run.task.state.labels == ["neg", "pos"]
    assert examples and all(ex.target[1] in ("neg", "pos") for ex in examples)


# --------------------------------------------------------------------------- finding 11


def splits_of(tmp_path: Path, content: str):
    from finetune.setup.data import load_splits

    path = tmp_path / "train.csv"
    path.write_text(content, encoding="utf-8")
    recipe = Recipe.model_validate(
        {
            "model": {"name": "unused"},
            "task": {"type": "classification"},
            "data": {"train": str(path)},
            "method": {"name": "lora"},
        }
    )
    task = make_task(recipe, FAMILIES["bert"])
    load_splits(task, recipe, None)
    return task


def test_string_labels_are_kept_as_written(tmp_path):
    """Finding 11: '01', '+1' and '1' are three classes, ' 1' is '1', '007' stays '007'."""
    task = splits_of(tmp_path, 'text,label\na,01\nb,+1\nc," 1"\nd,1\ne,007\nf,2\n')
    assert sorted(task.state.labels) == sorted(["01", "+1", "1", "007", "2"])
    assert "7" not in task.state.labels


def test_integer_labels_unify_and_sort_numerically(tmp_path):
    """Finding 11: real integers (and integral floats) unify; numeric labels sort as numbers."""
    task = splits_of(tmp_path, "text,label\na,10\nb,2\nc,1\n")
    assert task.state.labels == ["1", "2", "10"]
    from finetune.tasks.classification import _label_key

    assert _label_key(1) == _label_key(1.0) == _label_key("1") == _label_key(" 1")
    assert _label_key("01") != _label_key("1") and _label_key("+1") != _label_key("1")


# --------------------------------------------------------------------------- finding 22


def test_max_new_tokens_defaults_to_max_target_length(tiny_model_dir):
    """Finding 22: no eval.generation.max_new_tokens -> generate up to max_target_length."""
    from finetune.models.loading import load_tokenizer

    def config_for(gen: dict):
        recipe = Recipe.model_validate(
            {
                "model": {"name": str(tiny_model_dir("t5"))},
                "task": {"type": "summarization"},
                "data": {"train": "unused.jsonl"},
                "method": {"name": "lora"},
                "train": {"max_target_length": 200},
                "eval": {"generation": gen},
            }
        )
        task = make_task(recipe, FAMILIES["t5"])
        task.tokenizer = load_tokenizer(str(tiny_model_dir("t5")))

        class Model:
            from transformers import GenerationConfig

            generation_config = GenerationConfig()

        return task.generation_config(Model())

    assert Recipe.model_fields  # schema loaded
    assert config_for({}).max_new_tokens == 200
    assert config_for({"max_new_tokens": 7}).max_new_tokens == 7


def test_merge_check_inputs_of_a_pair_task_without_eval_data_are_pairs():
    """merge checks parity on made-up inputs when a run has no eval data (or its data is not on
    this machine); a pair task refuses single texts, so they must be pairs."""
    from finetune.models import FAMILIES
    from finetune.pipeline.merging import made_up_examples
    from finetune.recipe.schema import Recipe
    from finetune.setup.task import make_task

    recipe = Recipe.model_validate(
        {
            "model": {"name": "bert-base-uncased"},
            "task": PAIR_TASK,
            "data": {"train": "train.csv"},
            "method": {"name": "lora"},
        }
    )
    examples = made_up_examples(make_task(recipe, FAMILIES["bert"]))
    assert examples and all(ex.pair and ex.source for ex in examples)
