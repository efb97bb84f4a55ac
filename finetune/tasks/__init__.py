"""TASKS: the closed registry of tasks (recipe `task.type` -> Task class).

Adding a task is one entry here plus its module (config class + Task subclass); the recipe
schema, `validate`, `compare`, the model card and the docs read this registry.
"""

from __future__ import annotations

from finetune.tasks.base import Example, Task, model_kind
from finetune.tasks.classification import ClassificationTask
from finetune.tasks.regression import RegressionTask
from finetune.tasks.summarization import SummarizationTask
from finetune.tasks.translation import TranslationTask

TASKS: dict[str, type[Task]] = {
    t.name: t for t in (ClassificationTask, RegressionTask, SummarizationTask, TranslationTask)
}

__all__ = ["TASKS", "Example", "Task", "model_kind"]
