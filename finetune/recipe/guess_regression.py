"""`finetune init`'s guesses beyond `guess.py`: regression, numbered text pairs, header-less files.

- regression: a column of real numbers (values with a decimal point, more than two distinct)
  named like a score (`score`, `similarity`, `relatedness`, `rating`, or `label` holding
  numbers), or the only such column, beside a text column: STS-B's `score` (0-5);
- text pairs named by number: two text columns whose names differ only in 1/2 or a/b
  (MRPC's `#1 String` / `#2 String`) are `text` / `text_pair`;
- a header-less file has no names to go by: its label is the one column of a few integers
  (CoLA's 0/1), and the columns the task reads are named for their role (`guess_layout`).

Everything else is `guess.guess_task`'s; this module only fills in the flags a user would
otherwise have to pass, so the same checks and messages apply.
"""

from __future__ import annotations

import re
from dataclasses import replace
from typing import Any

from finetune.errors import ColumnGuessError
from finetune.recipe.guess import IGNORED, InitOptions, Sample, TaskGuess, guess_task
from finetune.recipe.guess_layout import Layout, integer_label, name_roles

SCORE_NAMES = ("score", "scores", "similarity", "relatedness", "rating", "label", "target")
_DECIMAL = re.compile(r"[.eE]")


def _filled(sample: Sample, column: str) -> list[Any]:
    return [row.get(column) for row in sample.rows if row.get(column) not in (None, "")]


def real_valued(sample: Sample, column: str) -> bool:
    """Numbers with a fractional part written out (3.800, 0.5), more than two distinct."""
    numbers, decimals = set(), False
    for value in _filled(sample, column):
        if isinstance(value, bool) or not isinstance(value, (int, float, str)):
            return False
        try:
            numbers.add(float(value))
        except ValueError:
            return False
        decimals = decimals or isinstance(value, float) or bool(_DECIMAL.search(str(value)))
    return decimals and len(numbers) > 2


def is_text(sample: Sample, column: str) -> bool:
    """Strings of two words or more on average (what a model reads)."""
    values = _filled(sample, column)
    if not values or not all(isinstance(v, str) for v in values):
        return False
    return sum(len(v.split()) for v in values) / len(values) >= 2


def score_column(sample: Sample, opts: InitOptions) -> str | None:
    """The column of target numbers a regression would learn, if the columns show one."""
    if opts.label is not None:
        return opts.label if real_valued(sample, opts.label) else None
    candidates = [c for c in sample.columns if c.lower() not in IGNORED]
    reals = [c for c in candidates if real_valued(sample, c)]
    named = [c for c in reals if c.strip().lower() in SCORE_NAMES]
    if len(named) == 1:
        return named[0]
    return reals[0] if len(reals) == 1 and not named else None


def numbered_pair(sample: Sample, exclude: set[str | None]) -> tuple[str, str] | None:
    """Two text columns named alike but for 1/2 or a/b, in that order (MRPC's '#1 String')."""
    texts = [c for c in sample.columns if c not in exclude and is_text(sample, c)]
    for first in texts:
        for a, b in (("1", "2"), ("a", "b"), ("A", "B")):
            if a not in first:
                continue
            at = first.rindex(a)
            second = first[:at] + b + first[at + 1 :]
            if second in texts:
                return first, second
    return None


def _with_pair(sample: Sample, opts: InitOptions) -> InitOptions:
    if opts.text is not None:
        return opts
    pair = numbered_pair(sample, {opts.label})
    return replace(opts, text=pair[0], text_pair=pair[1]) if pair else opts


def _regression(sample: Sample, opts: InitOptions, score: str) -> TaskGuess:
    """Classification's text choice with the score as label, then the regression keys."""
    as_classification = replace(_with_pair(sample, opts), task="classification", label=score)
    picked = guess_task(sample, as_classification)
    numbers = [float(v) for v in _filled(sample, score)]
    span = f"{min(numbers):g} to {max(numbers):g}"
    keys = {**picked.keys, "type": "regression", "label": score}
    comments = {**picked.comments, "label": f"target numbers, {span} in {len(numbers)} rows"}
    text = keys["text"] + (f" + {keys['text_pair']}" if "text_pair" in keys else "")
    return TaskGuess("regression", keys, comments, f"{text} -> {score}, {span}")


def guess_task_of(sample: Sample, opts: InitOptions, layout: Layout) -> tuple[TaskGuess, Layout]:
    """The task (with regression and numbered pairs), and the layout with role names."""
    if opts.task in (None, "regression"):
        score = score_column(sample, opts)
        texts = [c for c in sample.columns if c != score and is_text(sample, c)]
        if score is not None and texts:
            layout, guess = name_roles(layout, _regression(sample, opts, score))
            return guess, layout
        if opts.task == "regression":
            raise ColumnGuessError(
                f"{sample.recipe_path}: no column of target numbers beside a text column "
                f"(columns: {', '.join(sample.columns)})",
                fix="pass --label COLUMN naming the column of numbers, and --text COLUMN",
            )
    if not layout.header and opts.label is None and opts.task in (None, "classification"):
        label = integer_label(sample)  # no names to go by: the column of a few integers
        opts = replace(opts, label=label) if label else opts
    if opts.task in (None, "classification"):
        opts = _with_pair(sample, opts)
    guess = guess_task(sample, opts)
    layout, guess = name_roles(layout, guess)
    return guess, layout
