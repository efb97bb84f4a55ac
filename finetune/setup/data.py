"""The data step of a run: every split read, normalised and checked (row-precise errors)
before any weight loads, eval carved out of train when asked, and the train split tokenised
into features (streamed chunk by chunk for large local files)."""

from __future__ import annotations

import logging
import random
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

from finetune.data.encoding import encode_chunks, encode_features
from finetune.data.features import Features
from finetune.data.readers import read_source
from finetune.data.sources import LocalSource
from finetune.data.stream import StreamedSplit, scan_train, streamable
from finetune.errors import DataError, FinetuneError
from finetune.recipe.schema import Recipe
from finetune.tasks import Example, Task

log = logging.getLogger(__name__)

T = TypeVar("T")


@dataclass
class Splits:
    train: list[Example]  # empty when `streamed` holds the train split
    eval: list[Example] | None
    test: list[Example] | None
    streamed: StreamedSplit | None = None


def load_split(
    task: Task, recipe: Recipe, split: str, base_dir: Path | None
) -> list[Example] | None:
    source = getattr(recipe.data, split)
    if source is None:
        return None
    limit = recipe.data.max_train_samples if split == "train" else recipe.data.max_eval_samples
    table = read_source(source, base_dir, limit, task.languages(recipe.task), recipe.train.seed)
    return task.examples(table, split)


def load_splits(
    task: Task, recipe: Recipe, base_dir: Path | None, stream_train: bool = False
) -> Splits:
    """Read, normalise and check every split; carve eval out of train when asked.

    `stream_train`: a local CSV/TSV/JSON Lines train file is checked and fitted in one pass
    and tokenised later chunk by chunk (`data/stream.py`, `train_features`), never held whole.
    """
    streamed, source = None, recipe.data.train
    if stream_train and streamable(source, base_dir, recipe.data.eval_fraction):
        assert isinstance(source, LocalSource)
        limit = recipe.data.max_train_samples
        streamed = scan_train(task, source, base_dir, limit)
        train: list[Example] = []
    else:
        train = load_split(task, recipe, "train", base_dir) or []
    evaluation = load_split(task, recipe, "eval", base_dir)
    if evaluation is None and recipe.data.eval_fraction:
        train, evaluation = hold_out(train, recipe.data.eval_fraction, recipe.train.seed)
    if recipe.data.max_eval_samples and evaluation is not None:
        evaluation = evaluation[: recipe.data.max_eval_samples]
    task.fit(train if streamed is None else streamed.firsts)
    for split in (evaluation or []), (train):
        for example in split:
            task.check_example(example)
    test = load_split(task, recipe, "test", base_dir)
    return Splits(train=train, eval=evaluation, test=test, streamed=streamed)


def train_features(task: Task, splits: Splits, cache: bool) -> Features:
    """The train split's features (a streamed split is read again only on a cache miss); the
    examples are released once tokenised."""
    if splits.streamed is not None:
        found = splits.streamed
        return encode_chunks(task, found.chunks, found.content, training=True, cache=cache)
    features = encode_features(task, splits.train, training=True, cache=cache)
    splits.train = []  # the features are all training needs; free the examples' strings
    return features


def eval_features(task: Task, splits: Splits, cache: bool) -> Features | None:
    return encode_features(task, splits.eval, training=False, cache=cache) if splits.eval else None


def hold_out(examples: list[T], fraction: float, seed: int) -> tuple[list[T], list[T]]:
    """(kept, held out): a seeded `fraction` of the items, in their order (examples, or the
    raw rows `compare --tune` holds out)."""
    order = list(range(len(examples)))
    random.Random(seed).shuffle(order)
    n_eval = max(1, round(len(examples) * fraction))
    if n_eval >= len(examples):
        raise DataError(
            f"data.eval_fraction={fraction} leaves no training rows out of {len(examples)}",
            fix="lower data.eval_fraction or add data",
        )
    held = set(order[:n_eval])
    train = [e for i, e in enumerate(examples) if i not in held]
    evaluation = [examples[i] for i in sorted(held)]
    return train, evaluation


def saved_split(task: Task, recipe: Recipe, split: str, data: str | None) -> list[Example]:
    """The examples `finetune eval` scores for a finished run: a split its recipe names (the
    rows `data.eval_fraction` held out of train included) or another local file, labelled with
    the labels the run learnt (task.state, from run.json)."""
    if data:
        languages = task.languages(recipe.task)
        source = laid_out_like(recipe, data)
        examples = task.examples(read_source(source, None, None, languages), "eval")
    else:
        if split not in ("eval", "test", "train"):
            raise FinetuneError(f"--split {split}: unknown split", fix="use eval, test or train")
        source = getattr(recipe.data, split)
        held_out = split == "eval" and source is None and bool(recipe.data.eval_fraction)
        if source is None and not held_out:
            raise FinetuneError(
                f"the run's recipe has no data.{split}",
                fix="pass --data FILE to evaluate on a file",
            )
        if held_out:
            examples = _held_out_eval(task, recipe)
        else:
            examples = load_split(task, recipe, split, None) or []
        if split != "train" and recipe.data.max_eval_samples:
            examples = examples[: recipe.data.max_eval_samples]
    for example in examples:
        task.check_example(example)
    return examples


def laid_out_like(recipe: Recipe, data: str) -> LocalSource:
    """`--data FILE` read as the run read its own data when FILE has the same extension: the
    header, column names and quoting of GLUE-style files (say CoLA's header-less dev_ood.tsv
    after training on its header-less train.tsv) carry over; otherwise the file's defaults."""
    template = recipe.data.eval or recipe.data.train
    if isinstance(template, LocalSource) and Path(data).suffix == Path(template.path).suffix:
        return template.model_copy(update={"path": data})
    return LocalSource(path=data)


def _held_out_eval(task: Task, recipe: Recipe) -> list[Example]:
    """The rows `data.eval_fraction` carved out of train, labelled with run.json's labels.

    Not `load_splits`: it re-learns the label set from today's train file (`task.fit`), which
    may have changed since training; ids would then no longer match the trained head.
    """
    train = load_split(task, recipe, "train", None) or []
    _, held = hold_out(train, recipe.data.eval_fraction or 0.0, recipe.train.seed)
    return held
