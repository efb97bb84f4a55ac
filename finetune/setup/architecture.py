"""The recipe's architecture, checked against its task before any weight loads."""

from __future__ import annotations

from typing import TYPE_CHECKING

from finetune.errors import ModelError
from finetune.models.detect import detect_architecture
from finetune.tasks import model_kind

if TYPE_CHECKING:  # pragma: no cover
    from finetune.models.architecture import Architecture
    from finetune.recipe.schema import Recipe


def recipe_architecture(recipe: Recipe) -> Architecture:
    """The architecture row of the recipe's model (config.json, offline), refused when it
    cannot run the recipe's task (a T5 has no bert2bert, Marian no classification head)."""
    arch = detect_architecture(recipe.model)
    reason = arch.kind_reason(model_kind(recipe.task.type, arch))
    if reason:
        raise ModelError(
            f"task.type: {arch.display} ({arch.model_type}) cannot run {recipe.task.type}: "
            f"{reason}",
            fix="choose another task or model; `finetune models` lists what each supports",
        )
    return arch
