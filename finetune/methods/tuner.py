"""The shared mapping of the peft tuners that change the base's layers: one recipe section onto
one peft config, with finetune's target rules.

Every such method adapts `target_modules` (`auto`: a default from the architecture table, as
peft's own per-model tables do), never inside a newly initialised module (bert2bert's
cross-attention holds `query`/`value` too), and keeps the task's new modules (the head) in
`modules_to_save`. A subclass names its peft config class and maps its own options; saving,
loading, several adapters and merging are peft's (`PeftMethod`).
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any, ClassVar, Literal, Union

from pydantic import Field

from finetune.methods.peft_methods import PEFT_TASK_TYPES, PeftMethod, exclude_pattern

if TYPE_CHECKING:  # pragma: no cover
    from peft import PeftConfig

    from finetune.methods.base import MethodContext
    from finetune.models.architecture import Architecture
    from finetune.types import Model

TargetModules = Union[Literal["auto", "all-linear"], list[str]]

# where the new methods' default rates come from (README, Learning rates)
GRID = (
    "best on 3,000 quick-start train rows (1 epoch, SST-2 dev) among 5e-4, 2e-3 and 8e-3 "
    "(benchmarks/results/lr_grid_3000rows.md)"
)
WIDE_GRID = (
    "best on 3,000 quick-start train rows (1 epoch, SST-2 dev) among 2e-3, 8e-3 and 3.2e-2, "
    "followed past an edge where the best lay on it (benchmarks/results/lr_grid_weak_3000rows.md)"
)
GRID_TOP = GRID + "; the top of that grid, so a higher rate may do better: `compare --tune` widens"

LINEAR_ONLY = (
    "peft's LoHa, LoKr, OFT, BOFT and HRA layers wrap torch.nn.Linear only, and GPT-2's "
    "projections are transformers' Conv1D, which peft 0.21 refuses (TypeError); use LoRA, VeRA "
    "or FourierFT on GPT-2, or another decoder (Llama, Qwen2, SmolLM2)"
)


def targets_field(what: str = "Modules to adapt") -> Any:
    return Field("auto", description=f"{what}: auto (family table), all-linear, or a list.")


def targets_outside(targets: str | list[str], new_modules: list[str]) -> str | list[str]:
    """Targets as one regex that matches no module inside a new module, for the peft configs
    that have no `exclude_modules` (VeRA, RandLoRA): peft full-matches a string target."""
    if not new_modules or not isinstance(targets, list):
        return targets
    names = "|".join(re.escape(m) for m in new_modules)
    wanted = "|".join(re.escape(t) for t in targets)
    return rf"(?!(?:.*\.)?(?:{names})\.)(?:.*\.)?(?:{wanted})"


class TunerMethod(PeftMethod):
    """A peft tuner that wraps target layers: `peft_class` plus `tuner_options`."""

    peft_class: str = ""  # the config class's name in peft (LoHaConfig, ...)
    has_exclude: bool = True  # the peft config takes `exclude_modules`
    linear_only: bool = False  # peft's layer wraps nn.Linear only (not GPT-2's Conv1D)

    def unsupported_reason(self, family: Architecture, task_kind: str) -> str | None:
        return LINEAR_ONLY if self.linear_only and family.conv1d_layers else None

    def default_targets(self, ctx: MethodContext) -> tuple[str, ...]:
        """`target_modules: auto`: the attention projections LoRA adapts, as peft's tables."""
        return ctx.family.lora_targets

    # the recipe section's options go to the peft config under their own names, except these
    peft_names: ClassVar[dict[str, str]] = {}  # option -> peft's keyword where they differ
    peft_fixed: ClassVar[dict[str, object]] = {}  # peft keywords no recipe sets
    peft_skip: ClassVar[tuple[str, ...]] = ()  # options the method turns into others itself

    def tuner_options(self, cfg: Any, ctx: MethodContext) -> dict[str, object]:
        """This method's own keyword arguments of its peft config: every option of its recipe
        section (one list, the options model, so a new option cannot be forgotten here)."""
        skip = {"name", "target_modules", *self.peft_skip}
        options = {
            self.peft_names.get(key, key): getattr(cfg, key)
            for key in type(cfg).model_fields
            if key not in skip
        }
        return {**options, **self.peft_fixed}

    def targets(self, ctx: MethodContext) -> str | list[str]:
        value = ctx.config.target_modules
        return list(self.default_targets(ctx)) if value == "auto" else value

    def peft_config(self, model: Model, ctx: MethodContext) -> PeftConfig:
        import peft

        config_class = getattr(peft, self.peft_class)
        targets = self.targets(ctx)
        where: dict[str, Any] = {"target_modules": targets}
        if self.has_exclude:
            where["exclude_modules"] = exclude_pattern(ctx.new_modules)
        else:
            where["target_modules"] = targets_outside(targets, ctx.new_modules)
        return config_class(
            task_type=PEFT_TASK_TYPES.get(ctx.task_kind),
            modules_to_save=list(ctx.new_modules) or None,
            **where,
            **self.tuner_options(ctx.config, ctx),
        )
