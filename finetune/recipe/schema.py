"""The recipe schema: the single source of truth for every option.

Every key is a typed pydantic field with a default and a one-line description. The README option
tables and `finetune validate` read these models; nothing else restates them. The `task:` and
`method:` unions are built from the TASKS and METHODS registries, whose entries declare their own
config classes, so adding a task or a method never touches this file; the other sections live in
sections.py. Importing this module must stay cheap (no torch, no transformers): the CLI loads it
for `--help` and `validate`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Any, Union

from pydantic import Field

from finetune.data.sources import HubSource, LocalSource
from finetune.methods import METHODS
from finetune.recipe.section import Section
from finetune.recipe.sections import (
    DataConfig,
    DecodingConfig,
    EvalConfig,
    ModelConfig,
    OutputConfig,
    QuantizationConfig,
    TrainConfig,
    default_lr,
)
from finetune.tasks import TASKS

TASK_TYPES = tuple(TASKS)
METHOD_NAMES = tuple(METHODS)


def _union(classes: list[type[Section]], discriminator: str) -> object:
    """A discriminated union over registry config classes, each listed once, in registry order
    (a type form pydantic reads: `Annotated[Union[...], Field(discriminator=...)]`)."""
    unique = list(dict.fromkeys(classes))
    return Annotated[Union[tuple(unique)], Field(discriminator=discriminator)]


if TYPE_CHECKING:  # built at run time from the registries: a static checker sees "any entry"
    TaskConfig = Any
    MethodConfig = Any
else:
    TaskConfig = _union([t.config_class for t in TASKS.values()], "type")
    MethodConfig = _union([m.config_class for m in METHODS.values()], "name")


class Recipe(Section):
    """A whole recipe: one YAML file.

    Some values are left to the method (`train.lr: null`); `resolved()` fills them in once,
    so the optimizer, the run's recipe.yaml and run.json all see the value that ran.
    """

    name: str | None = Field(
        None,
        description="A short name for the recipe; `compare` names its task column after it "
        "(default: the file name).",
    )
    model: ModelConfig = Field(description="Which pretrained model to start from.")
    task: TaskConfig = Field(description="What to learn and which columns hold it.")
    data: DataConfig = Field(description="Where the examples come from.")
    method: MethodConfig = Field(description="How the model is adapted.")
    train: TrainConfig = Field(default_factory=TrainConfig, description="Optimisation.")
    eval: EvalConfig = Field(default_factory=EvalConfig, description="Evaluation.")
    output: OutputConfig = Field(default_factory=OutputConfig, description="Where to write.")

    def resolved(self) -> Recipe:
        """A copy with the method's defaults filled in where the recipe leaves them open."""
        copy = self.model_copy(deep=True)
        if copy.train.lr is None:
            copy.train.lr = copy.default_rate()
        return copy

    def default_rate(self) -> float:
        """The method's default learning rate under the recipe's optimizer."""
        return default_lr(METHODS[self.method.name].default_lr, self.train.optimizer)


def rate_note(recipe: Recipe) -> str:
    """The learning rate in use and where it came from. A recipe written for one method keeps
    its rate when `method=` switches to another, whose default can be 16x away (LoRA's 2e-3,
    VeRA's 3.2e-2): say so, with the override that picks the method's own."""
    name, default = recipe.method.name, recipe.default_rate()
    lr = recipe.train.lr if recipe.train.lr is not None else default
    if lr == default:
        return f"learning rate {lr:g} ({name}'s default)"
    note = f"learning rate {lr:g}, the recipe's ({name}'s default is {default:g}"
    far = max(lr / default, default / lr) >= 4
    return note + ("; train.lr=null runs at it)" if far else ")")


__all__ = [
    "METHOD_NAMES",
    "TASK_TYPES",
    "DataConfig",
    "DecodingConfig",
    "EvalConfig",
    "HubSource",
    "LocalSource",
    "MethodConfig",
    "ModelConfig",
    "OutputConfig",
    "QuantizationConfig",
    "Recipe",
    "TaskConfig",
    "TrainConfig",
    "rate_note",
]
