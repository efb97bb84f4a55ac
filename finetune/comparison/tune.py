"""`compare --tune`: a short learning-rate search per method, on data held out from train.

A method run at a guessed rate loses to a tuned rival for the wrong reason (issue #15: full
fine-tuning at 5e-5 "lost" by 20 points). Each method tries a few log-spaced rates around its
default on a fraction of the training budget, scored on a seeded hold-out of the training rows
(written to `search/train.jsonl` and `search/dev.jsonl`), then runs in full at the best one.
When the best rate lies on an edge of the grid, the grid grows past that edge, one rate at a
time (twice at most), so a search does not stop at a rate that was merely the largest tried.
A best rate next to a cliff (the rate above it failed, or scored worse than the smallest
rate tried) is replaced by the rate below it: a short search favours rates near divergence, and
the full run, with three times the steps at that rate, fell over the edge in our measurements
(the quick start's LoRA: 0.850 held out at 8e-3, 0.771 in full against 0.847 at 2e-3).
For the same reason a best rate that beats the rates just below it by less than one standard
error of its held-out score gives way to the smallest of them (`quieter_rate`).
The eval split that the report shows is never read by the search: the search recipes name
only the two search files, so the verdict is not fitted to the figures it reports.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

from finetune.comparison.intervals import add_intervals, one_answer
from finetune.comparison.runner import Point, Row, SearchEntry, higher_is_better
from finetune.errors import FinetuneError, Problem, RecipeError
from finetune.jsonvalues import as_object, child, copy_object, integer, number
from finetune.run.files import atomic_write_text

if TYPE_CHECKING:  # pragma: no cover
    from finetune.comparison.recipes import RecipeData
    from finetune.types import JSON

TableRow = TypeVar("TableRow", bound=Mapping[str, object])  # a data row as the readers parse it

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


def search_split(base: Mapping[str, JSON], recipe_dir: Path, out: Path, seed: int) -> SearchData:
    """The full run's training rows, split into search train / dev files (seeded).

    The full run's training rows are what its recipe reads (`max_train_samples` applied, and
    without the rows `eval_fraction` carves out for the report's eval split)."""
    from finetune.data.readers import read_source
    from finetune.recipe.io import build_recipe
    from finetune.setup.data import hold_out
    from finetune.tasks import TASKS

    recipe, problems = build_recipe(copy_object(base), "compare recipe", [])
    if recipe is None:
        raise RecipeError(problems)
    langs = TASKS[recipe.task.type].languages(recipe.task)
    table = read_source(recipe.data.train, recipe_dir, recipe.data.max_train_samples, langs)
    # hold_out shuffles positions only, so on raw rows it drops exactly the rows `run` holds out
    rows = table.rows
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


def trainable_dev(
    train: list[TableRow], dev: list[TableRow], label: str
) -> tuple[list[TableRow], list[TableRow]]:
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


MIN_SEARCH_STEPS = 60  # below this a search run says little (see search_steps)


def search_steps(train: Mapping[str, JSON], rows: int, budget: float) -> int:
    """A fraction of the full run's optimizer steps (its max_steps, or epochs x batches; the
    defaults are the schema's), but at least MIN_SEARCH_STEPS (or the whole run when it is
    shorter): at 19 steps (30% of 2,000 SST-2 rows) every rate of every method scored the
    majority class, and the search chose by tie-break (benchmarks/results/glue_small.md)."""
    if train.get("max_steps"):
        full = integer(train["max_steps"], 1)
    else:
        per_step = integer(train.get("batch_size"), 32) * integer(train.get("grad_accum"), 1)
        full = integer(train.get("epochs"), 1) * math.ceil(rows / per_step)
    return max(1, math.ceil(budget * full), min(full, MIN_SEARCH_STEPS))


def search_recipe(data: Mapping[str, JSON], split: SearchData, lr: float, steps: int) -> RecipeData:
    recipe = copy_object(data)
    recipe["data"] = {
        "train": str(split.train),
        "eval": str(split.dev),
        "max_eval_samples": MAX_SEARCH_EVAL,
    }
    train = child(recipe, "train")
    train.update({"lr": lr, "max_steps": steps})
    for key in ("eval_steps", "save_steps"):  # one evaluation, at the end
        train.pop(key, None)
    return recipe


WIDEN = 2  # extra rates a search may add beyond an edge of its grid, one at a time
STEP = 2.0  # the factor between neighbouring rates of the grid, and of each widening


@dataclass
class Search:
    """One method's rate search on one task: the rates tried, their held-out scores, and the
    next rate to try when the best one lies on an edge of the grid (the grid widens by one
    rate at a time, at most WIDEN times: a best rate at the edge may not be the best one)."""

    name: str  # the report's name of what is searched ("lora", or "cola/lora" in a suite)
    method: str
    data: RecipeData
    split: SearchData
    out: Path
    steps: int
    default: float
    pending: list[float] = field(default_factory=list)
    table: list[SearchEntry] = field(default_factory=list)
    widened: int = 0

    def points(self) -> list[Point]:
        return [
            Point(search_recipe(self.data, self.split, lr, self.steps), self._name(lr), self.method)
            for lr in self.pending
        ]

    def _name(self, lr: float) -> str:
        return f"{SEARCH_DIR}/{self.method}-lr{lr:g}"

    def record(self, rows: list[Row]) -> None:
        """Add this round's scores; plan the next round (one rate past an edge) or finish."""
        add_intervals(rows, self.out)  # each held-out score's noise, for `quieter_rate`
        self.table += [
            _search_entry(row, lr, self.steps, one_answer(self.out / row.name))
            for row, lr in zip(rows, self.pending)
        ]
        self.table.sort(key=lambda entry: entry["lr"])
        self.pending = []
        scored = [entry for entry in self.table if entry["score"] is not None]
        if not scored or self.widened >= WIDEN:
            return
        best, tried = self.best, [entry["lr"] for entry in self.table]
        # every rate answered one class: none learned in the search's steps, so try a larger one
        nothing_learned = all(entry.get("one_answer") for entry in scored)
        if (best == max(tried) or nothing_learned) and max(tried) * STEP <= 1.0:
            self.pending = [float(f"{max(tried) * STEP:.3g}")]
        elif best == min(tried) and not nothing_learned:
            self.pending = [float(f"{best / STEP:.3g}")]
        self.widened += bool(self.pending)

    @property
    def best(self) -> float:
        """The rate with the best held-out score (what the grid widens around)."""
        return best_rate(self.table, self.default)

    @property
    def chosen(self) -> float:
        """The rate the full run uses: the best one, or a smaller one when the best is within
        noise of it or next to a cliff."""
        return min(safe_rate(self.table, self.best), quieter_rate(self.table, self.best))


def new_search(
    name: str, data: RecipeData, method: str, split: SearchData, out: Path, options: TuneOptions
) -> Search:
    train = as_object(data.get("train"))
    default = number(train.get("lr"))
    if default is None:  # method_recipe sets one
        raise RecipeError([Problem("train.lr", "is not a number", "set train.lr to a rate")])
    steps = search_steps(train, split.rows, options.budget)
    rates = search_rates(default, options.rates)
    return Search(name, method, data, split, out, steps, default, pending=rates)


def _search_entry(row: Row, lr: float, steps: int, constant: bool) -> SearchEntry:
    ok = row.status == "ok" and row.quality is not None
    return {
        "one_answer": ok and constant,
        "lr": lr,
        "steps": steps,
        "metric": row.quality_metric,
        "score": row.quality if ok else None,
        "status": row.status,
        "low": row.quality_low if ok else None,
        "high": row.quality_high if ok else None,
    }


def best_rate(table: list[SearchEntry], default: float) -> float:
    scored = [(score, t) for t in table if (score := t["score"]) is not None]
    if not scored:
        return default
    sign = 1.0 if higher_is_better(scored[0][1]["metric"]) else -1.0
    # a rate that learned something beats one that answered one class whatever their scores;
    # among equal scores, the rate nearest the default (in log space) wins
    best = max(
        scored,
        key=lambda st: (
            not st[1].get("one_answer"),
            sign * st[0],
            -abs(math.log(st[1]["lr"] / default)),
        ),
    )
    return best[1]["lr"]


def safe_rate(table: list[SearchEntry], best: float) -> float:
    """`best`, or the rate tried just below it when the rate just above it collapsed: it
    failed or gave no score (a constant prediction has no correlation), it gave every held-out
    row the same label where `best` did not, or it scored worse than the smallest rate that
    scored (everything the grid gained on the way up was lost in one step). Such a best rate
    is within one step of divergence, and the full run trains longer at it than the search
    did. A flat curve is not a cliff."""
    rates = [entry["lr"] for entry in table]
    if best not in rates:
        return best
    at = rates.index(best)
    if at == 0 or at == len(table) - 1:
        return best
    above, below = table[at + 1], table[at - 1]
    collapsed = above.get("one_answer") and not table[at].get("one_answer")
    if above["status"] == "ok" and above["score"] is not None and not collapsed:
        floor = next(entry["score"] for entry in table if entry["score"] is not None)
        sign = 1.0 if higher_is_better(above["metric"]) else -1.0
        if sign * above["score"] >= sign * floor:
            return best
    return below["lr"] if below["score"] is not None else best


def standard_error(entry: SearchEntry) -> float | None:
    """A held-out score's standard error, read off its 95% bootstrap interval."""
    low, high = entry.get("low"), entry.get("high")
    if entry["score"] is None or low is None or high is None:
        return None
    return (high - low) / (2 * 1.96)


def quieter_rate(table: list[SearchEntry], best: float) -> float:
    """The smallest of the rates just below `best` whose held-out scores all lie within one
    standard error of best's: the one-standard-error rule of model selection, here choosing the
    gentler rate. A search scores one seed over a short run, and a rate that wins it by less
    than its noise is often one that another seed, trained longer, cannot hold (BitFit and
    prompt tuning on SST-2: benchmarks/results/glue_small_sst2_recheck.md). The walk stops at
    a rate that gave every held-out row one label: always answering the majority class can be
    within one standard error of a small hold-out's best F1 (MRPC: 0.77 against 0.78-0.81),
    and a rate that learned nothing is not a gentler version of one that learned
    (benchmarks/results/glue_small_glue_mrpc_tuned.md)."""
    rates = [entry["lr"] for entry in table]
    if best not in rates:
        return best
    top = table[rates.index(best)]
    error = standard_error(top)
    if error is None or top["score"] is None:
        return best
    sign = 1.0 if higher_is_better(top["metric"]) else -1.0
    chosen = best
    for entry in reversed(table[: rates.index(best)]):
        score = entry["score"]
        if entry["status"] != "ok" or score is None or entry.get("one_answer"):
            break
        if sign * score < sign * top["score"] - error:
            break
        chosen = entry["lr"]
    return chosen
