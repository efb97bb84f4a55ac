"""`method: none`, the zero-shot baseline: nothing trains; the base model is evaluated as it is.

`run` evaluates it on the recipe's eval data with the prompts (chat template or plain) and
generation settings a trained run uses, and writes a run directory without weights, which
`eval` and `predict` rebuild like any other; `compare --methods none,...` shows it as the
"zero-shot" row, so a report says how far each method moved from the base model. The method
declares `trains = False`; setup and the verbs read that fact (no guard, optimizer, loop or
artefact), never this method's name.

A task whose model needs newly initialised modules (a classification head, bert2bert's
cross-attention) has no zero-shot score worth reporting: the untrained modules output noise,
so those combinations are refused by `validate`.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Literal

from pydantic import Field

from finetune.errors import FinetuneError
from finetune.methods.base import Method, MethodContext
from finetune.recipe.section import Section

if TYPE_CHECKING:  # pragma: no cover
    from finetune.models.architecture import Architecture
    from finetune.types import Model, StateDict

NEW_HEAD = (
    "nothing trains under method none, and a classification head (or regression head) starts "
    "freshly initialised, so its score would be chance, not a zero-shot baseline; compare "
    "trained methods instead"
)
NEW_CROSS_ATTENTION = (
    "nothing trains under method none, and bert2bert's decoder cross-attention starts freshly "
    "initialised, so the untrained model generates noise, not a zero-shot baseline"
)
ZERO_SHOT = "zero-shot"  # how `compare` labels the row and names the run


class NoneOptions(Section):
    name: Literal["none"] = Field(
        description="Method: nothing trains; the base model is evaluated as it is (the "
        "zero-shot baseline, for summarization and translation)."
    )


class NoneMethod(Method):
    name = "none"
    config_class = NoneOptions
    default_lr = 5e-4  # never used: there is no optimizer
    lr_source = "not used: nothing trains"
    trains = False
    mergeable = False
    library = "transformers"  # what a card's snippet loads: the base model itself
    artifact_dir = ""  # nothing is saved; run.json records the empty name
    description = "nothing trains: the base model evaluated as it is (zero-shot baseline)"
    label = ZERO_SHOT

    def unsupported_reason(self, family: Architecture, task_kind: str) -> str | None:
        if task_kind == "classification":
            return NEW_HEAD
        if family.shape == "encoder":  # bert2bert: an encoder pair with new cross-attention
            return NEW_CROSS_ATTENTION
        return None

    def apply(self, model: Model, ctx: MethodContext) -> Model:
        """The base model, frozen; refused when loading left modules newly initialised (their
        outputs are noise, so an untrained score would measure nothing)."""
        if ctx.new_modules:
            raise FinetuneError(
                f"method none: this model starts with newly initialised modules "
                f"({', '.join(ctx.new_modules)}), so its untrained score means nothing",
                fix="train a method on this model, or pick a base model that has these weights",
            )
        for param in model.parameters():
            param.requires_grad_(False)
        return model

    def save(self, model: Model, out_dir: Path, state_dict: StateDict | None = None) -> None:
        raise NotImplementedError("method none trains nothing, so it saves nothing")

    def load(self, model: Model, in_dir: Path, ctx: MethodContext) -> Model:
        """A zero-shot run directory holds no weights: the fresh base model is the run."""
        return self.apply(model, ctx)
