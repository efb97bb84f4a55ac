"""`compare --tune`: a short learning-rate search per method, on data held out from train.

A method run at a guessed rate loses to a tuned rival for the wrong reason (issue #15: full
fine-tuning at 5e-5 "lost" by 20 points). Each method tries a few log-spaced rates around its
default on a fraction of the training budget, scored on a seeded hold-out of the training rows
(written to `search/train.jsonl` and `search/dev.jsonl`), then runs in full at the best one.
The eval split that the report shows is never read by the search: the search recipes name
only the two search files, so the verdict is not fitted to the figures it reports.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from finetune.commands.runner import Row, higher_is_better, run_point
from finetune.errors import FinetuneError, RecipeError
from finetune.run.files import atomic_write_text

SEARCH_DIR = "search"  # under the report's folder: the split files and the search runs
HOLD_OUT = 0.2  # of the training rows, scored during the search
MAX_SEARCH_EVAL = 500  # held-out rows scored per search run (generation is slow)
FACTORS = {3: (0.5, 1.0, 2.0), 5: (0.25, 0.5, 1.0, 2.0, 4.0)}


@dataclass
class TuneOptions:
    rates: int = 5  # 3 or 5 log-spaced rates around the method's default
    budget: float = 0.3  # fraction of the full run's optimizer steps per search run
    seed: int = 0  # the hold-out's shuffle


@dataclass
class SearchData:
    train: Path
    dev: Path
    rows: int  # training rows of the full run, for the step budget


def search_rates(default: float, count: int) -> list[float]:
    return [float(f"{default * f:.3g}") for f in FACTORS[count]]


def search_split(base: dict[str, Any], recipe_dir: Path, out: Path, seed: int) -> SearchData:
    """The full run's training rows, split into search train / dev files (seeded).

    The full run's training rows are what its recipe reads (`max_train_samples` applied, and
    without the rows `eval_fraction` carves out for the report's eval split)."""
    from finetune.commands.build import hold_out
    from finetune.data.readers import read_source
    from finetune.recipe.io import build_recipe
    from finetune.tasks import TASKS

    recipe, problems = build_recipe(json.loads(json.dumps(base)), "compare recipe", [])
    if recipe is None:
        raise RecipeError(problems)
    langs = TASKS[recipe.task.type].languages(recipe.task)
    table = read_source(recipe.data.train, recipe_dir, recipe.data.max_train_samples, langs)
    # hold_out shuffles positions only, so on raw rows it drops exactly the rows `run` holds out
    rows: Any = table.rows
    if recipe.data.eval is None and recipe.data.eval_fraction:
        rows, _ = hold_out(rows, recipe.data.eval_fraction, recipe.train.seed)
    search_train, dev = hold_out(rows, HOLD_OUT, seed)
    if recipe.task.type == "classification":
        search_train, dev = trainable_dev(search_train, dev, recipe.task.label)
    folder = out / SEARCH_DIR
    folder.mkdir(parents=True, exist_ok=True)
    files = []
    for name, part in (("train.jsonl", search_train), ("dev.jsonl", dev)):
        lines = "".join(json.dumps(r, ensure_ascii=False, default=str) + "\n" for r in part)
        atomic_write_text(folder / name, lines)
        files.append(folder / name)
    return SearchData(train=files[0], dev=files[1], rows=len(rows))


def trainable_dev(train: list[Any], dev: list[Any], label: str) -> tuple[list, list]:
    """Held-out rows whose class the search's training rows lack move to training: with many
    classes and few rows each, a class seen only in dev fails every search run (E205)."""
    seen = {json.dumps(row.get(label), default=str) for row in train}
    kept = []
    for row in dev:
        key = json.dumps(row.get(label), default=str)
        if key in seen:
            kept.append(row)
        else:
            train.append(row)
            seen.add(key)
    if not kept:
        raise FinetuneError(
            "compare --tune: too few training rows per class to hold out a search split",
            fix="add training rows, or compare without --tune",
        )
    return train, kept


def search_steps(train: dict[str, Any], rows: int, budget: float) -> int:
    """A fraction of the full run's optimizer steps (its max_steps, or epochs x batches)."""
    if train.get("max_steps"):
        full = int(train["max_steps"])
    else:
        per_step = int(train.get("batch_size", 32)) * int(train.get("grad_accum", 1))
        full = int(train.get("epochs", 1)) * math.ceil(rows / per_step)
    return max(1, math.ceil(budget * full))


def search_recipe(data: dict[str, Any], split: SearchData, lr: float, steps: int) -> dict:
    recipe = json.loads(json.dumps(data))
    recipe["data"] = {
        "train": str(split.train),
        "eval": str(split.dev),
        "max_eval_samples": MAX_SEARCH_EVAL,
    }
    train = recipe.setdefault("train", {})
    train.update({"lr": lr, "max_steps": steps})
    for key in ("eval_steps", "save_steps"):  # one evaluation, at the end
        train.pop(key, None)
    return recipe


def tune_method(
    data: dict[str, Any],
    method: str,
    split: SearchData,
    out: Path,
    overwrite: bool,
    options: TuneOptions,
) -> tuple[float, list[dict[str, Any]]]:
    """Try each rate on the search split; the best held-out score wins (ties: the default)."""
    default = float(data["train"]["lr"])
    steps = search_steps(data.get("train") or {}, split.rows, options.budget)
    table: list[dict[str, Any]] = []
    for lr in search_rates(default, options.rates):
        name = f"{SEARCH_DIR}/{method}-lr{lr:g}"
        row = run_point(search_recipe(data, split, lr, steps), name, method, out, overwrite)
        table.append(_search_entry(row, lr, steps))
    return best_rate(table, default), table


def _search_entry(row: Row, lr: float, steps: int) -> dict[str, Any]:
    ok = row.status == "ok" and row.quality is not None
    return {
        "lr": lr,
        "steps": steps,
        "metric": row.quality_metric,
        "score": row.quality if ok else None,
        "status": row.status,
    }


def best_rate(table: list[dict[str, Any]], default: float) -> float:
    scored = [t for t in table if t["score"] is not None]
    if not scored:
        return default
    sign = 1.0 if higher_is_better(scored[0]["metric"]) else -1.0
    # among equal scores, the rate nearest the default (in log space) wins
    return max(scored, key=lambda t: (sign * t["score"], -abs(math.log(t["lr"] / default))))["lr"]
