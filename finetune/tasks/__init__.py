"""TASKS: the closed registry of tasks (recipe `task.type` -> Task class).

Adding a task is one entry here plus its module (config class + Task subclass); the recipe
schema, `validate`, `compare`, the model card and the docs read this registry.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from finetune.tasks.base import Example, Task, TaskSettings
from finetune.tasks.classification import ClassificationTask
from finetune.tasks.regression import RegressionTask
from finetune.tasks.summarization import SummarizationTask
from finetune.tasks.translation import TranslationTask

if TYPE_CHECKING:  # pragma: no cover
    from finetune.models.architecture import Architecture

TASKS: dict[str, type[Task]] = {
    t.name: t for t in (ClassificationTask, RegressionTask, SummarizationTask, TranslationTask)
}


def model_kind(task_type: str, arch: Architecture) -> str:
    """Which head `task_type` needs on `arch`: 'classification', 'seq2seq' or 'causal'."""
    return TASKS[task_type].kind_on(arch)


__all__ = ["TASKS", "Example", "Task", "TaskSettings", "model_kind"]
