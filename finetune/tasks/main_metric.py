"""Which metric is a run's main one, and which way is better.

A task has a default main metric (`Task.main_metric`: accuracy, pearson, rougeL, bleu); a
recipe may choose another of the task's metrics with `task.metric` (Matthews correlation for
CoLA, the positive class's F1 for MRPC). The choice is read here, once, by everything that
ranks or reports: best-weights selection and early stopping (`train.best_metric: auto`), the
eval curve, run.json (so `compare` and `sweep` rank finished runs by it), their bootstrap
intervals, `compare --tune` and the model card, which lists it first.
"""

from __future__ import annotations

from typing import Protocol


class TaskSection(Protocol):
    """What is read of a recipe's `task:` section here (`metric` with getattr: optional)."""

    @property
    def type(self) -> str: ...


# metrics where lower is better; every other metric (accuracy, F1, correlations, ROUGE, BLEU,
# chrF) is better higher
LOWER_IS_BETTER = frozenset({"loss", "mse"})


def lower_is_better(metric: str) -> bool:
    """Whether a smaller value of `metric` (with or without the eval_ prefix) is better."""
    name = metric.removeprefix("eval_")
    return name in LOWER_IS_BETTER or name.endswith("_loss")


def main_metric(task: TaskSection) -> str:
    """The task section's `task.metric`, or its task's default main metric when it says auto
    (or the section has no `metric`)."""
    from finetune.tasks import TASKS

    chosen = getattr(task, "metric", "auto")
    return TASKS[task.type].main_metric if chosen in (None, "auto") else str(chosen)
