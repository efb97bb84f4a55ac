"""The task step of a run: the recipe's task on its architecture, with the settings it reads
beyond its own section (length limits, decoding, extra metrics) and the one fact it needs
from the method (virtual tokens), handed over as values: a task never looks a method up."""

from __future__ import annotations

from typing import TYPE_CHECKING

from finetune.tasks import TASKS, Task, TaskSettings

if TYPE_CHECKING:  # pragma: no cover
    from finetune.methods.base import Method
    from finetune.models.architecture import Architecture
    from finetune.recipe.schema import Recipe


def task_settings(recipe: Recipe, method: Method) -> TaskSettings:
    return TaskSettings(
        max_length=recipe.train.max_length,
        max_target_length=recipe.train.max_target_length,
        decoding=recipe.eval.generation,
        extra_metrics=tuple(recipe.eval.metrics),
        virtual_tokens=method.virtual_tokens,
    )


def make_task(recipe: Recipe, arch: Architecture, method: Method | None = None) -> Task:
    """The recipe's task (tokenizer not set yet: data is checked before anything loads)."""
    if method is None:
        from finetune.methods import METHODS

        method = METHODS[recipe.method.name]
    return TASKS[recipe.task.type](recipe.task, arch, task_settings(recipe, method))
