"""Best-evaluation selection and early stopping.

After every evaluation `Selection.update` compares the chosen metric with the best so far,
keeps a CPU copy of the trainable weights when it improved, counts evaluations without
improvement and says when to stop. The metrics it reads are gathered over every process (see
`train.evaluation`), so every rank takes the same decision at the same step without any extra
communication. It is registered with Accelerate's checkpointing, so a checkpoint holds the
best-so-far value, step, patience count and weights, and `--resume` continues with exactly
the selection state the interrupted run had at that step.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, TypedDict

from finetune.errors import Problem, RecipeError
from finetune.jsonvalues import number

if TYPE_CHECKING:  # pragma: no cover
    from finetune.recipe.schema import Recipe
    from finetune.types import JSON, Model, Scalar, StateDict, Tensor

EVAL_PREFIX = "eval_"  # how log.jsonl and the loop's eval records name eval metrics
NOT_METRICS = ("samples", "step", "epoch")


@dataclass(frozen=True)
class BestRule:
    """Which eval metric picks the best weights, in which direction, and why (for the log)."""

    metric: str
    mode: str  # "max" or "min"
    why: str


def metrics_during_training(recipe: Recipe) -> bool:
    """Whether the in-training evaluations compute the task's metrics (generation tasks only
    compute ROUGE/BLEU there with eval.generate_during_training; otherwise loss only)."""
    from finetune.tasks import TASKS

    return not TASKS[recipe.task.type].is_generation or recipe.eval.generate_during_training


def best_rule(recipe: Recipe) -> BestRule:
    """`train.best_metric` / `best_mode` resolved: auto is the task's main metric when the
    in-training evaluations compute it, else the eval loss; a loss is minimised."""
    from finetune.tasks.main_metric import lower_is_better, main_metric

    cfg = recipe.train
    metric = cfg.best_metric.removeprefix(EVAL_PREFIX)
    why = "train.best_metric"
    if metric == "auto":
        main = main_metric(recipe.task)  # task.metric, else the task's default
        if metrics_during_training(recipe):
            metric, why = main, f"the task's main metric ({recipe.task.type})"
        else:
            metric = "loss"
            why = f"eval loss: {main} is computed during training only with " + (
                "eval.generate_during_training=true"
            )
    mode = cfg.best_mode
    if mode == "auto":
        mode = "min" if lower_is_better(metric) else "max"
    return BestRule(metric, mode, why)


def selection_enabled(recipe: Recipe) -> bool:
    """`train.select_best`, where null means: on when there is eval data."""
    if recipe.train.select_best is not None:
        return recipe.train.select_best
    return has_eval_data(recipe)


def has_eval_data(recipe: Recipe) -> bool:
    return recipe.data.eval is not None or bool(recipe.data.eval_fraction)


def check_selection(recipe: Recipe, where: str) -> list[Problem]:
    """What `validate` can tell before any weight loads: selection and early stopping need
    evaluations, and a generation metric needs generation during training."""
    cfg, problems = recipe.train, []
    needs_eval = [
        key
        for key, on in (
            ("train.select_best", cfg.select_best is True),
            ("train.early_stopping_patience", cfg.early_stopping_patience is not None),
        )
        if on
    ]
    if needs_eval and not has_eval_data(recipe):
        for key in needs_eval:
            problems.append(
                Problem(
                    f"{where}: {key}",
                    "needs evaluations, but the recipe has no eval data",
                    "set data.eval or data.eval_fraction, or remove " + key,
                )
            )
    metric = cfg.best_metric.removeprefix(EVAL_PREFIX)
    if metric not in ("auto", "loss") and not metrics_during_training(recipe):
        problems.append(
            Problem(
                f"{where}: train.best_metric",
                f"{metric} is not computed during training for a {recipe.task.type} task "
                "(the evaluations during training compute the loss only)",
                "set eval.generate_during_training=true, or train.best_metric=auto (eval loss)",
            )
        )
    return problems


class SelectionState(TypedDict):
    """What a checkpoint holds of the selection (Accelerate pickles it with torch.save)."""

    best_value: float | None
    best_step: int | None
    bad_evals: int
    weights: StateDict | None


class Selection:
    """The best evaluation so far, its weights, and the evaluations since it (patience)."""

    def __init__(self, rule: BestRule, keep_weights: bool, patience: int | None, delta: float):
        self.rule = rule
        self.keep_weights = keep_weights
        self.patience = patience
        self.min_delta = delta
        self.best_value: float | None = None
        self.best_step: int | None = None
        self.bad_evals = 0
        self.weights: StateDict | None = None

    @property
    def active(self) -> bool:
        return self.keep_weights or self.patience is not None

    def value_of(self, record: Mapping[str, JSON]) -> float | None:
        """The rule's metric in an evaluation record (keys with or without the eval_ prefix);
        an unknown name is a recipe error naming the metrics the evaluation has."""
        name = self.rule.metric
        value = record.get(EVAL_PREFIX + name, record.get(name))
        if value is None and not any(k in record for k in (name, EVAL_PREFIX + name)):
            known = sorted(
                k.removeprefix(EVAL_PREFIX)
                for k in record
                if k.startswith(EVAL_PREFIX) and k.removeprefix(EVAL_PREFIX) not in NOT_METRICS
            )
            raise RecipeError(
                [
                    Problem(
                        "train.best_metric",
                        f"the evaluation computes no metric {name!r}",
                        "use one of: auto, " + ", ".join(known),
                    )
                ]
            )
        found = number(value)  # None, NaN and anything but a number never win
        return found if found is not None and math.isfinite(found) else None

    def improves(self, value: float | None) -> bool:
        if value is None:  # a NaN/None metric never wins
            return False
        if self.best_value is None:
            return True
        if self.rule.mode == "max":
            return value > self.best_value + self.min_delta
        return value < self.best_value - self.min_delta

    def update(self, step: int, record: Mapping[str, JSON], model: Model) -> bool:
        """Record one evaluation; True when early stopping says stop here."""
        if not self.active:
            return False
        value = self.value_of(record)
        if self.improves(value):
            self.best_value, self.best_step, self.bad_evals = value, step, 0
            if self.keep_weights:
                self.weights = trainable_state(model)
        else:
            self.bad_evals += 1
        return self.patience is not None and self.bad_evals >= self.patience

    def restore(self, model: Model) -> bool:
        """Put the best weights back into `model`; False when there is nothing to restore."""
        if self.weights is None:
            return False
        load_trainable_state(model, self.weights)
        return True

    # Accelerate's register_for_checkpointing protocol: saved into every checkpoint
    def state_dict(self) -> SelectionState:
        return {
            "best_value": self.best_value,
            "best_step": self.best_step,
            "bad_evals": self.bad_evals,
            "weights": self.weights,
        }

    def load_state_dict(self, state: SelectionState) -> None:
        self.best_value = state["best_value"]
        self.best_step = state["best_step"]
        self.bad_evals = state["bad_evals"]
        self.weights = state["weights"]

    def summary(self) -> dict[str, Scalar]:
        """What metrics.json reports about the choice."""
        return {
            "select_best": self.keep_weights,  # False: the last weights, best_step for reference
            "best_metric": f"{EVAL_PREFIX}{self.rule.metric}",
            "best_mode": self.rule.mode,
            "best_value": self.best_value,
            "best_step": self.best_step,
        }


def trainable_state(model: Model) -> StateDict:
    """A CPU copy of the parameters that train (everything else never changes)."""
    return {
        name: p.detach().to("cpu", copy=True)
        for name, p in _unwrapped(model).named_parameters()
        if p.requires_grad
    }


def load_trainable_state(model: Model, state: Mapping[str, Tensor]) -> None:
    import torch

    params = dict(_unwrapped(model).named_parameters())
    with torch.no_grad():
        for name, saved in state.items():
            params[name].copy_(saved.to(params[name].device, params[name].dtype))


def _unwrapped(model: Model) -> Model:
    """The module under DDP's wrapper, so names match on one process and many."""
    from torch.nn.parallel import DistributedDataParallel

    return model.module if isinstance(model, DistributedDataParallel) else model
