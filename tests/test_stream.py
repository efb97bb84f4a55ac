"""The train split streamed from its file in chunks (issue #12: memory that grows gently).

A streamed split must give exactly what reading it whole gives: the same labels, the same
features in the same order, the same messages for a bad row and the same duplicate warning,
across chunk boundaries; and a rerun must find the feature cache without reading the file a
second time.
"""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from finetune.commands.build import load_splits, make_task, train_features
from finetune.data import encoding, stream
from finetune.errors import DataValueError, LabelError
from finetune.models import FAMILIES
from finetune.models.loading import load_tokenizer
from finetune.recipe.schema import Recipe
from tests.conftest import write_csv
from tests.generation_data import translation_rows, write_jsonl
from tests.tiny_models import sentiment_rows


def _recipe(train: Path, task: dict, family_dir: Path, **data) -> Recipe:
    return Recipe.model_validate(
        {
            "model": {"name": str(family_dir)},
            "task": task,
            "data": {"train": str(train), **data},
            "method": {"name": "lora"},
            "train": {"max_length": 32, "max_target_length": 16},
        }
    )


def _both(recipe: Recipe, family: str, model_dir: Path, base: Path):
    """(streamed task, features), (whole-read task, features)."""
    found = []
    for streamed in (True, False):
        task = make_task(recipe, FAMILIES[family])
        splits = load_splits(task, recipe, base, stream_train=streamed)
        assert (splits.streamed is not None) == streamed
        task.tokenizer = load_tokenizer(str(model_dir))
        found.append((task, train_features(task, splits, cache=False)))
    return found


def _rows(features) -> list[dict]:
    return [features[i] for i in range(len(features))]


@pytest.fixture()
def small_chunks(monkeypatch):
    """Chunks of 7 rows: every split below crosses several chunk boundaries."""
    monkeypatch.setattr(stream, "CHUNK_ROWS", 7)
    monkeypatch.setattr(encoding, "CHUNK_ROWS", 7)


def test_streamed_classification_equals_the_whole_read(tmp_path, tiny_model_dir, small_chunks):
    rows = sentiment_rows(40, seed=3)
    for i, row in enumerate(rows):  # a third class first seen in the second chunk
        row["label"] = "meh" if i % 9 == 8 else ["neg", "pos"][row["label"]]
    train = write_csv(tmp_path / "train.csv", rows)
    model = tiny_model_dir("bert")
    recipe = _recipe(train, {"type": "classification"}, model, max_train_samples=33)
    (streamed, a), (whole, b) = _both(recipe, "bert", model, tmp_path)
    assert streamed.state.labels == whole.state.labels  # sorted, every class seen
    assert len(a) == len(b) == 33
    assert _rows(a) == _rows(b)  # ids, labels, idx 0..32 across the chunk boundaries


def test_streamed_translation_jsonl_equals_the_whole_read(tmp_path, tiny_model_dir, small_chunks):
    train = write_jsonl(tmp_path / "train.jsonl", translation_rows(30, seed=1))
    model = tiny_model_dir("t5")
    task_section = {"type": "translation", "source_lang": "en", "target_lang": "de"}
    (_, a), (_, b) = _both(_recipe(train, task_section, model), "t5", model, tmp_path)
    assert len(a) == 30 and _rows(a) == _rows(b)


def test_streamed_bad_row_and_labels_are_named_as_before(tmp_path, tiny_model_dir, small_chunks):
    rows = [{"text": f"row {i}", "label": str(i % 2)} for i in range(20)]
    rows[16]["label"] = ""
    train = write_csv(tmp_path / "train.csv", rows)
    recipe = _recipe(train, {"type": "classification"}, tiny_model_dir("bert"))
    with pytest.raises(DataValueError, match=r"train\.csv line 18: column 'label'"):
        load_splits(make_task(recipe, FAMILIES["bert"]), recipe, tmp_path, stream_train=True)

    one_class = write_csv(tmp_path / "one.csv", [{"text": "a", "label": "x"}] * 9)
    recipe = _recipe(one_class, {"type": "classification"}, tiny_model_dir("bert"))
    with pytest.raises(LabelError, match="every training label is 'x'"):
        load_splits(make_task(recipe, FAMILIES["bert"]), recipe, tmp_path, stream_train=True)


def test_streamed_duplicate_warning_is_the_whole_reads(
    tmp_path, tiny_model_dir, small_chunks, caplog
):
    rows = [{"text": f"row {i % 12}", "label": str(i % 2)} for i in range(24)]
    train = write_csv(tmp_path / "train.csv", rows)
    recipe = _recipe(train, {"type": "classification"}, tiny_model_dir("bert"))
    warnings = []
    for streamed in (True, False):
        caplog.clear()
        with caplog.at_level(logging.WARNING):
            load_splits(make_task(recipe, FAMILIES["bert"]), recipe, tmp_path, streamed)
        warnings.append([r.getMessage() for r in caplog.records if "duplicate" in r.getMessage()])
    assert warnings[0] == warnings[1]
    assert warnings[0] == [
        f"{train}: 12 duplicate rows (line 14 repeats line 2; line 15 repeats line 3; "
        "line 16 repeats line 4, ...); they count twice in training/eval"
    ]


def test_a_rerun_memory_maps_the_cache_without_reading_the_file_again(
    tmp_path, tiny_model_dir, monkeypatch
):
    train = write_csv(tmp_path / "train.csv", sentiment_rows(30, seed=1))
    model = tiny_model_dir("bert")
    recipe = _recipe(train, {"type": "classification"}, model)
    reads = []
    original = stream.row_chunks

    def counted(*args, **kwargs):
        reads.append(1)
        yield from original(*args, **kwargs)

    monkeypatch.setattr(stream, "row_chunks", counted)
    found = []
    for _ in range(2):
        task = make_task(recipe, FAMILIES["bert"])
        splits = load_splits(task, recipe, tmp_path, stream_train=True)
        task.tokenizer = load_tokenizer(str(model))
        found.append(_rows(train_features(task, splits, cache=True)))
    assert found[0] == found[1]
    assert len(reads) == 3  # scan + tokenise the first time; the rerun only scans


def test_eval_fraction_and_other_formats_read_the_split_whole(tmp_path, tiny_model_dir):
    train = write_csv(tmp_path / "train.csv", sentiment_rows(30, seed=1))
    recipe = _recipe(train, {"type": "classification"}, tiny_model_dir("bert"), eval_fraction=0.2)
    splits = load_splits(make_task(recipe, FAMILIES["bert"]), recipe, tmp_path, True)
    assert splits.streamed is None and len(splits.train) == 24 and len(splits.eval or []) == 6


def test_a_file_changed_between_the_passes_is_refused_and_not_cached(
    tmp_path, tiny_model_dir, small_chunks, monkeypatch
):
    """Rows checked in the first pass are the rows tokenised: an edit in between (a file still
    being written) stops the run, and nothing is cached under the checked content's key."""
    from finetune.errors import DataError

    train = write_csv(tmp_path / "train.csv", sentiment_rows(20, seed=1))
    model = tiny_model_dir("bert")
    recipe = _recipe(train, {"type": "classification"}, model)
    for edit in ("changed", "longer"):
        monkeypatch.setenv("FINETUNE_CACHE_DIR", str(tmp_path / edit))  # a cold cache each
        task = make_task(recipe, FAMILIES["bert"])
        splits = load_splits(task, recipe, tmp_path, stream_train=True)
        task.tokenizer = load_tokenizer(str(model))
        rows = sentiment_rows(20, seed=1)
        if edit == "changed":
            rows[9]["text"] = "an edited row"
        else:
            rows += sentiment_rows(3, seed=5)
        write_csv(train, rows)
        with pytest.raises(DataError, match="changed between the check of every row"):
            train_features(task, splits, cache=True)
        write_csv(train, sentiment_rows(20, seed=1))  # back as it was checked
        again = make_task(recipe, FAMILIES["bert"])
        again.tokenizer = load_tokenizer(str(model))
        fresh = train_features(again, load_splits(again, recipe, tmp_path, True), cache=True)
        whole = make_task(recipe, FAMILIES["bert"])
        whole.tokenizer = load_tokenizer(str(model))
        expected = train_features(whole, load_splits(whole, recipe, tmp_path, False), cache=False)
        assert _rows(fresh) == _rows(expected)


def test_jsonl_columns_come_from_the_first_row_in_every_chunk(
    tmp_path, tiny_model_dir, small_chunks
):
    """A later chunk's first row lacking the label names that row, as a whole read does."""
    rows = [{"text": f"row {i}", "label": i % 2} for i in range(20)]
    del rows[7]["label"]  # the first row of the second chunk of 7
    train = write_jsonl(tmp_path / "train.jsonl", rows)
    recipe = _recipe(train, {"type": "classification"}, tiny_model_dir("bert"))
    for streamed in (True, False):
        with pytest.raises(DataValueError, match=r"train\.jsonl line 8: column 'label'"):
            load_splits(make_task(recipe, FAMILIES["bert"]), recipe, tmp_path, streamed)
