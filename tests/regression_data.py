"""Toy regression data: a learnable score (0-5) carried by the sentiment cue words, as text or
text pairs, and a recipe for it (the regression counterpart of `classification_recipe`)."""

from __future__ import annotations

import random
from pathlib import Path

from tests.conftest import classification_recipe, write_csv
from tests.tiny_models import FILLER, NEGATIVE, POSITIVE


def score_rows(n: int, seed: int, pair: bool = False) -> list[dict]:
    """Rows whose `score` is about 4 with a positive cue word, about 1 with a negative one."""
    rng = random.Random(seed)
    rows = []
    for _ in range(n):
        positive = rng.random() < 0.5
        cue = rng.choice(POSITIVE if positive else NEGATIVE)
        words = rng.sample(FILLER, rng.randint(2, 5)) + [cue]
        rng.shuffle(words)
        row = {"text": " ".join(words)}
        if pair:
            row["text_pair"] = " ".join(rng.sample(FILLER, 3))
        row["score"] = f"{(4.0 if positive else 1.0) + rng.uniform(-0.5, 0.5):.3f}"
        rows.append(row)
    return rows


def score_files(root: Path, pair: bool = False) -> tuple[Path, Path]:
    train = write_csv(root / "data" / "scores-train.tsv", score_rows(96, 1, pair), "\t")
    dev = write_csv(root / "data" / "scores-dev.tsv", score_rows(40, 2, pair), "\t")
    return train, dev


def regression_recipe(
    model_dir: Path, train: Path, dev: Path, out: Path, method: dict, pair: bool = False, **opts
) -> dict:
    data = classification_recipe(model_dir, train, dev, out, method, **opts)
    data["task"] = {"type": "regression", "text": "text", "label": "score"}
    if pair:
        data["task"]["text_pair"] = "text_pair"
    return data
