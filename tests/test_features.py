"""Tokenised features as flat arrays, encoded in chunks, through the feature cache (issue #12)."""

from __future__ import annotations

import json
import logging
from dataclasses import replace

import numpy as np
import pytest

from finetune.commands.build import make_task
from finetune.data import encoding
from finetune.data.encoding import encode_features
from finetune.data.features import Features
from finetune.models import FAMILIES
from finetune.recipe.schema import Recipe
from finetune.tasks.base import Example

ROWS = [
    {"input_ids": [101, 7, 8, 102], "idx": 0, "length": 4, "labels": 1},
    {"input_ids": [101, 9, 102], "token_type_ids": [0, 0, 1], "idx": 1, "length": 3},
    {"idx": 2, "length": 2, "prompt_ids": [5, 6]},  # an unlabelled causal eval row
    {"input_ids": [1, 70000], "idx": 3, "length": 2, "labels": 0},
]


def test_rows_come_back_as_they_went_in_with_absent_columns_absent(tmp_path):
    features = Features.from_rows(ROWS)
    assert len(features) == 4
    assert [features[i] for i in range(4)] == ROWS
    assert features.lengths == [4, 3, 2, 2]
    features.save(tmp_path / "f")
    loaded = Features.load(tmp_path / "f")
    assert isinstance(loaded.tokens["input_ids"][0], np.memmap)  # read from disk on demand
    assert [loaded[i] for i in range(4)] == ROWS


def test_chunks_where_a_column_comes_and_goes_line_up():
    chunks = [ROWS[2:3], ROWS[0:2], ROWS[2:3], ROWS[3:4]]
    features = Features.concat(chunks)
    assert [features[i] for i in range(5)] == [ROWS[2], ROWS[0], ROWS[1], ROWS[2], ROWS[3]]


def test_token_ids_use_the_narrowest_type():
    """uint16 for a 30k vocabulary: 2 bytes a token instead of a Python int's 28 + 8."""
    small = Features.from_rows([{"input_ids": [0, 30521], "length": 2}])
    assert small.tokens["input_ids"][0].dtype == np.uint16
    signed = Features.from_rows([{"labels": [-100, 50256], "length": 2}])
    assert signed.tokens["labels"][0].dtype == np.int32


def _task(model_dir, max_length: int = 32):
    from finetune.models.loading import load_tokenizer

    recipe = Recipe.model_validate(
        {
            "model": {"name": str(model_dir)},
            "task": {"type": "classification"},
            "data": {"train": "unused.csv"},
            "method": {"name": "lora"},
            "train": {"max_length": max_length},
        }
    )
    task = make_task(recipe, FAMILIES["bert"])
    task.tokenizer = load_tokenizer(str(model_dir))
    task.state.labels = ["0", "1"]
    return task


def _examples(n: int, words: int = 3) -> list[Example]:
    return [
        Example(source=" ".join(["good"] * (1 + (i % words))), target=("str", str(i % 2)), where="")
        for i in range(n)
    ]


def test_chunked_encoding_equals_one_pass_and_warns_truncation_once(
    tiny_model_dir, monkeypatch, caplog
):
    task = _task(tiny_model_dir("bert"), max_length=8)
    examples = _examples(10, words=12)
    long = sum(len(task.tokenizer(ex.source)["input_ids"]) > 8 for ex in examples)
    assert 0 < long < 10
    whole = task.encode(examples, training=True)
    monkeypatch.setattr(encoding, "CHUNK_ROWS", 3)
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        features = encode_features(task, examples, training=True, cache=False)
    assert [features[i] for i in range(10)] == whole  # idx runs 0..9 across the 4 chunks
    warnings = [r.getMessage() for r in caplog.records if "truncated" in r.getMessage()]
    assert warnings == [
        f"{long} of 10 inputs longer than 8 tokens were truncated (raise train.max_length)"
    ]


def test_the_cache_skips_tokenisation_and_misses_on_any_change(
    tiny_model_dir, monkeypatch, feature_cache, caplog
):
    task = _task(tiny_model_dir("bert"), max_length=8)
    calls = []
    real = task.encode
    monkeypatch.setattr(
        task, "encode", lambda ex, training: calls.append(len(ex)) or real(ex, training)
    )
    examples = _examples(12, words=12)
    first = encode_features(task, examples, training=True)
    assert calls == [12] and len(list(feature_cache.iterdir())) == 1
    with caplog.at_level(logging.WARNING):
        again = encode_features(task, examples, training=True)
    assert calls == [12], "a second use of the same split must not tokenise"
    assert [again[i] for i in range(12)] == [first[i] for i in range(12)]
    assert any("truncated" in r.getMessage() for r in caplog.records), "warned again on a hit"

    encode_features(task, examples[:-1], training=True)  # one row fewer
    encode_features(task, examples, training=False)  # eval-time features
    task.settings = replace(task.settings, max_length=16)
    encode_features(task, examples, training=True)
    task.state.labels = ["1", "0"]
    encode_features(task, examples, training=True)
    assert calls == [12, 11, 12, 12, 12]
    assert len(list(feature_cache.iterdir())) == 5


def test_a_damaged_cache_entry_is_made_again(tiny_model_dir, feature_cache, caplog):
    task = _task(tiny_model_dir("bert"))
    examples = _examples(6)
    first = encode_features(task, examples, training=True)
    (entry,) = feature_cache.iterdir()
    (entry / "features.json").write_text("{not json")
    with caplog.at_level(logging.WARNING):
        again = encode_features(task, examples, training=True)
    assert "unreadable" in caplog.text
    assert [again[i] for i in range(6)] == [first[i] for i in range(6)]
    assert json.loads((entry / "features.json").read_text())["count"] == 6


def test_cache_off_writes_nothing(tiny_model_dir, feature_cache):
    encode_features(_task(tiny_model_dir("bert")), _examples(4), training=True, cache=False)
    assert not feature_cache.exists()


@pytest.mark.parametrize("family", ["gpt2", "t5"])
def test_generation_features_round_trip_through_the_cache(tiny_model_dir, family):
    from finetune.models.loading import load_tokenizer

    recipe = Recipe.model_validate(
        {
            "model": {"name": str(tiny_model_dir(family))},
            "task": {"type": "summarization"},
            "data": {"train": "unused.jsonl"},
            "method": {"name": "lora"},
            "train": {"max_length": 32, "max_target_length": 8},
        }
    )
    task = make_task(recipe, FAMILIES[family])
    task.tokenizer = load_tokenizer(str(tiny_model_dir(family)))
    examples = [
        Example(source=f"a long dialogue number {i}", target=[f"sum {i}"], where="")
        for i in range(5)
    ] + [Example(source="no reference", target=None, where="")]
    for split, training in ((examples[:5], True), (examples, False)):  # eval: one unlabelled
        rows = task.encode(split, training)
        encode_features(task, split, training)
        cached = encode_features(task, split, training)
        assert [cached[i] for i in range(len(split))] == rows


def test_run_then_eval_and_a_second_run_tokenise_each_split_once(
    tmp_path, runner, tiny_model_dir, sentiment_files, feature_cache, monkeypatch
):
    """`eval` of a run and a rerun (as `compare` and `sweep` make) read the run's cached splits:
    with tokenisation made to fail, they still give the same metrics."""
    from finetune.cli import app
    from finetune.tasks.classification import ClassificationTask
    from tests.conftest import classification_recipe, write_recipe

    train, dev = sentiment_files
    first, second = tmp_path / "first", tmp_path / "second"
    recipe = classification_recipe(tiny_model_dir("bert"), train, dev, first, {"name": "lora"})
    recipe["train"]["epochs"] = 1
    path = write_recipe(tmp_path / "r.yaml", recipe)
    assert runner.invoke(app, ["run", str(path), "--no-progress"]).exit_code == 0
    assert len(list(feature_cache.iterdir())) == 2  # train and eval

    def refuse(*_: object) -> None:
        raise AssertionError("tokenised again")

    monkeypatch.setattr(ClassificationTask, "encode", refuse)
    result = runner.invoke(app, ["eval", str(first)])
    assert result.exit_code == 0, result.output
    metrics = json.loads((first / "metrics.json").read_text())
    assert json.loads((first / "eval_eval.json").read_text())["accuracy"] == metrics["accuracy"]
    rerun = ["run", str(path), f"output.dir={second}", "--no-progress"]
    result = runner.invoke(app, rerun)
    assert result.exit_code == 0, result.output
    assert json.loads((second / "metrics.json").read_text())["accuracy"] == metrics["accuracy"]


def test_the_cache_misses_on_what_else_decides_the_ids(tiny_model_dir, monkeypatch, feature_cache):
    """Same row count, other text; the tokenizer's settings and added tokens; a task option;
    and a hit that spans several chunks comes back whole."""
    task = _task(tiny_model_dir("bert"))
    calls = []
    real = task.encode
    monkeypatch.setattr(
        task, "encode", lambda ex, training: calls.append(len(ex)) or real(ex, training)
    )
    monkeypatch.setattr(encoding, "CHUNK_ROWS", 4)
    examples = _examples(10, words=12)
    first = encode_features(task, examples, training=True)
    assert calls == [4, 4, 2]
    hit = encode_features(task, examples, training=True)
    assert calls == [4, 4, 2] and [hit[i] for i in range(10)] == [first[i] for i in range(10)]

    edited = list(examples)
    edited[3] = Example(source="bad", target=examples[3].target, where="")
    encode_features(task, edited, training=True)
    assert len(calls) == 6, "one row's text changed: a miss"
    task.tokenizer.truncation_side = "left"
    encode_features(task, examples, training=True)
    assert len(calls) == 9, "truncation side changed: a miss"
    task.tokenizer.add_tokens(["zzzunseen"])
    encode_features(task, examples, training=True)
    assert len(calls) == 12, "an added token: a miss"
    task.cfg.text = "sentence"
    encode_features(task, examples, training=True)
    assert len(calls) == 15, "the task section changed: a miss"


def test_generation_cache_misses_on_target_length_and_prefix(tiny_model_dir, feature_cache):
    from finetune.models.loading import load_tokenizer

    recipe = Recipe.model_validate(
        {
            "model": {"name": str(tiny_model_dir("t5"))},
            "task": {"type": "summarization"},
            "data": {"train": "unused.jsonl"},
            "method": {"name": "lora"},
            "train": {"max_length": 32, "max_target_length": 8},
        }
    )
    task = make_task(recipe, FAMILIES["t5"])
    task.tokenizer = load_tokenizer(str(tiny_model_dir("t5")))
    examples = [
        Example(source=f"dialogue {i}", target=[f"summary {i}"], where="") for i in range(3)
    ]
    encode_features(task, examples, training=True)
    task.settings = replace(task.settings, max_target_length=16)
    encode_features(task, examples, training=True)
    recipe.task.prefix = "summarise: "
    features = encode_features(task, examples, training=True)
    assert len(list(feature_cache.iterdir())) == 3
    assert [features[i] for i in range(3)] == task.encode(examples, training=True)
