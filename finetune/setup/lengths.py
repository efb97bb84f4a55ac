"""Token lengths of a data sample under a recipe's own task and tokenizer: what `finetune init`
sets `train.max_length` and `train.max_target_length` from.

A fixed 128 cuts most DialogSum dialogues in half (a decoder's chat prompt adds its template
too), and `run` only warns about it after the data is tokenised. The rows are measured the way
`run` encodes them (the task's `encode`: special tokens, pair separators, prompt templates), so
the number written is the one that keeps them whole. Limits are rounded up to a multiple of 64
and never set below the schema's default of 128 (short texts keep today's recipe), nor above
the model's position limit."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

from finetune.tasks.generation import GenerationTask
from finetune.tasks.padding import IGNORE

if TYPE_CHECKING:  # pragma: no cover
    from finetune.data.readers import Table
    from finetune.recipe.schema import Recipe
    from finetune.tasks import Task
    from finetune.types import Feature

FLOOR = 128  # the schema's default: a guess never shortens it
STEP = 64
COVER = 0.99  # the share of sampled rows a limit keeps whole: one outlier does not set it
UNMEASURED = 65536  # the schema's largest length: nothing is cut while measuring
NO_LIMIT = 10**6  # at or above it a count is a placeholder (transformers' VERY_LARGE_INTEGER)


@dataclass(frozen=True)
class LengthGuess:
    """One `train.*` length limit and the sample it was read from (for the recipe comment)."""

    key: str  # max_length | max_target_length
    value: int
    rows: int
    longest: int
    cut: int  # sampled rows longer than value
    ceiling: int | None  # the model's position limit, when it capped value

    def comment(self, what: str) -> str:
        head = f"{what}; longest {self.longest} in {self.rows} sampled rows"
        if self.ceiling is not None and self.cut:
            return f"{head}: {self.cut} cut at the model's limit"
        return f"{head}, {self.cut} cut" if self.cut else head


def measure_lengths(recipe: Recipe, table: Table) -> list[LengthGuess]:
    """The input limit (and the target limit, for generation) that keeps COVER of the rows
    whole. Raises what loading the tokenizer raises (a Hub id not downloaded, offline)."""
    if not table.rows:
        return []
    task, limit = _measuring_task(recipe)
    examples = task.examples(table, "train")
    if not task.is_generation:  # labels are ids, not tokens; encoding them needs `fit`
        examples = [dataclasses.replace(ex, target=None) for ex in examples]
    features = task.encode(examples, training=True)
    causal = isinstance(task, GenerationTask) and task.is_causal()
    inputs, targets = _split_lengths(features, causal)
    if not task.is_generation:
        return [_guess("max_length", inputs, limit)]
    if not causal:  # an encoder and a decoder, each with its own positions
        return [_guess("max_length", inputs, limit), _guess("max_target_length", targets, limit)]
    # a decoder's prompt and reply share its positions: the reply gets at most half
    target = _guess("max_target_length", targets, None if limit is None else limit // 2)
    prompt = _guess("max_length", inputs, None if limit is None else limit - target.value)
    return [prompt, target]


def _measuring_task(recipe: Recipe) -> tuple[Task, int | None]:
    """The recipe's task with nothing cut, its tokenizer loaded, and the positions a row may
    use (None: no limit known)."""
    from finetune.methods import METHODS
    from finetune.setup.architecture import recipe_architecture
    from finetune.setup.run_setup import base_tokenizer
    from finetune.setup.task import make_task

    train = recipe.train.model_copy(
        update={"max_length": UNMEASURED, "max_target_length": UNMEASURED}
    )
    wide = recipe.model_copy(update={"train": train})
    task = make_task(wide, recipe_architecture(recipe))
    task.tokenizer = base_tokenizer(recipe)
    limits = [n for n in (_position_limit(recipe), task.tokenizer.model_max_length) if n < NO_LIMIT]
    if not limits:
        return task, None
    virtual = getattr(recipe.method, "num_virtual_tokens", 0)  # prompt learning's own positions
    usable = min(limits) - (virtual if METHODS[recipe.method.name].virtual_tokens else 0)
    return task, usable if usable >= 2 * STEP else None  # a toy limit: keep the default


def _position_limit(recipe: Recipe) -> int:
    """config.json's position count (T5's `n_positions` is its training length, not a hard
    limit, but longer inputs are rarely what a user meant); NO_LIMIT when it names none."""
    from finetune.models.names import model_config

    config = model_config(recipe.model.name, recipe.model.revision)
    for key in ("max_position_embeddings", "n_positions"):
        value = (config or {}).get(key)
        if isinstance(value, int) and value > 0:
            return value
    return NO_LIMIT


def _split_lengths(features: list[Feature], causal: bool) -> tuple[list[int], list[int]]:
    """(input, target) token counts per row. A decoder's row is prompt + target, its prompt
    positions labelled IGNORE; other tasks keep the input alone in `length`."""
    inputs, targets = [], []
    for feat in features:
        labels = feat.get("labels")
        targets_of = list(labels) if isinstance(labels, list) else []
        prompt = sum(1 for label in targets_of if label == IGNORE) if causal else feat["length"]
        inputs.append(int(prompt))
        targets.append(len(targets_of) - prompt if causal else len(targets_of))
    return inputs, targets


def _guess(key: str, lengths: list[int], ceiling: int | None) -> LengthGuess:
    ordered = sorted(lengths)
    kept = ordered[max(0, math.ceil(COVER * len(ordered)) - 1)]  # nearest-rank quantile
    value = max(FLOOR, -(-kept // STEP) * STEP)
    capped = ceiling is not None and value > ceiling
    if capped and ceiling is not None:
        value = ceiling
    cut = sum(1 for n in ordered if n > value)
    return LengthGuess(key, value, len(ordered), ordered[-1], cut, ceiling if capped else None)
