"""LN tuning (Qi et al. 2022): only the layer norms' scales and shifts train.

peft copies each targeted norm and trains the copy; `target_modules: auto` takes every norm layer
of the model (LayerNorm, RMSNorm and the T5-style norms, found by their class, outside the new
modules), since peft's table lacks most architectures. Merging swaps the trained copies in, so
the merged model is exact.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal

from pydantic import Field

from finetune.methods.base import MethodContext, inside
from finetune.methods.tuner import GRID_TOP, TargetModules, TunerMethod, targets_field
from finetune.recipe.section import Section

if TYPE_CHECKING:  # pragma: no cover
    from peft import PeftConfig

    from finetune.types import Model


class LNTuningOptions(Section):
    name: Literal["ln_tuning"] = Field(
        description="Method: LN tuning (only the norm layers train)."
    )
    target_modules: TargetModules = targets_field("Norm layers to train")


def norm_layers(model: Model, new_modules: list[str]) -> list[str]:
    """The names (last part) of every norm layer with weights, outside the new modules."""
    names = set()
    for name, module in model.named_modules():
        kind = type(module).__name__
        own = [p for p, _ in module.named_parameters(recurse=False)]
        if "Norm" in kind and own and not inside(name, new_modules):
            names.add(name.rsplit(".", 1)[-1])
    return sorted(names)


class LNTuningMethod(TunerMethod):
    name = "ln_tuning"
    config_class = LNTuningOptions
    peft_class = "LNTuningConfig"
    default_lr = 8e-3
    lr_source = GRID_TOP
    description = "only the layer norms train (peft LNTuningConfig)"
    markers = ("ln_tuning_layers", "modules_to_save")
    # the norms' scales start at 1: weight decay would pull them to 0
    no_decay = ("ln_tuning_layers",)

    def peft_config(self, model: Model, ctx: MethodContext) -> PeftConfig:
        if ctx.config.target_modules == "auto":
            found = norm_layers(model, ctx.new_modules)
            ctx = MethodContext(
                ctx.family,
                ctx.task_kind,
                ctx.config.model_copy(update={"target_modules": found}),
                ctx.new_modules,
                ctx.plan,
            )
        return super().peft_config(model, ctx)
