"""TASKS: the closed registry of tasks (recipe `task.type` -> Task class)."""

from __future__ import annotations

from finetune.models.architectures import Family
from finetune.tasks.base import Example, Task
from finetune.tasks.classification import ClassificationTask
from finetune.tasks.summarization import SummarizationTask
from finetune.tasks.translation import TranslationTask

TASKS: dict[str, type[Task]] = {
    "classification": ClassificationTask,
    "summarization": SummarizationTask,
    "translation": TranslationTask,
}


def task_class(name: str) -> type[Task]:
    return TASKS[name]


def model_kind(task_type: str, family: Family) -> str:
    """Which head a task needs on a family: 'classification', 'seq2seq' or 'causal'."""
    if task_type == "classification":
        return "classification"
    return "causal" if family.architecture == "decoder" else "seq2seq"


__all__ = ["TASKS", "Example", "Task", "model_kind", "task_class"]
