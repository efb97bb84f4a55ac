"""AdaLoRA (Zhang et al. 2023): LoRA in SVD form (P·Λ·Q) whose rank budget is moved during
training to the layers that matter, pruning the least important singular values.

It starts every adapted layer at `init_r`, trains a warm-up share of the steps at full rank
(`warmup`), then prunes down to an average of `target_r` per layer until the last `final`
share of the steps, which train with the ranks fixed. The schedule needs the run's planned
step count (`TrainingPlan.total_steps`, given at apply time) and one call per optimizer step,
after the gradients exist and before they are cleared: the method's `step_hook`, which the
training verb hands to the loop like any other method hook. The saved adapter records the
ranks it kept (`rank_pattern`) and is peft's; it folds into the weights like LoRA.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Literal, TypedDict, cast

from pydantic import Field

from finetune.errors import FinetuneError, Problem
from finetune.methods.base import MethodContext
from finetune.methods.tuner import WIDE_GRID, TargetModules, TunerMethod, targets_field
from finetune.methods.wrapped import peft_model
from finetune.recipe.section import Section

if TYPE_CHECKING:  # pragma: no cover
    from peft.tuners.adalora import AdaLoraConfig, AdaLoraModel

    from finetune.types import Model, Tensor


class AdaLoraOptions(Section):
    name: Literal["adalora"] = Field(
        description="Method: AdaLoRA (rank budget reallocated across layers while training)."
    )
    init_r: int = Field(12, ge=1, le=1024, description="Rank every layer starts with.")
    target_r: int = Field(8, ge=1, le=1024, description="Average rank per layer at the end.")
    alpha: float = Field(8.0, gt=0, description="Scaling numerator (alpha / rank).")
    dropout: float = Field(0.0, ge=0, lt=1, description="Dropout on the AdaLoRA input.")
    warmup: float = Field(
        0.1, ge=0, lt=1, description="Share of the steps at full rank before pruning starts."
    )
    final: float = Field(
        0.2, ge=0, lt=1, description="Share of the last steps that train with the ranks fixed."
    )
    interval: int = Field(1, ge=1, description="Steps between two budget allocations.")
    beta1: float = Field(0.85, gt=0, lt=1, description="Smoothing of the importance scores.")
    beta2: float = Field(0.85, gt=0, lt=1, description="Smoothing of their uncertainty.")
    orth_reg_weight: float = Field(
        0.5, ge=0, description="Weight of the loss keeping P and Q orthogonal."
    )
    target_modules: TargetModules = targets_field()


def schedule(cfg: Any, total_steps: int) -> dict[str, int]:
    """tinit/tfinal in steps from the recipe's shares; a budgeting phase must remain."""
    tinit, tfinal = int(cfg.warmup * total_steps), int(cfg.final * total_steps)
    if tinit >= total_steps - tfinal:
        raise FinetuneError(
            f"method adalora: {total_steps} planned steps leave no step to reallocate ranks in "
            f"(warm-up {tinit} + final {tfinal})",
            fix="lower method.warmup / method.final, or train for more steps",
        )
    return {"tinit": tinit, "tfinal": tfinal, "total_step": total_steps}


class AdaLoraMethod(TunerMethod):
    name = "adalora"
    config_class = AdaLoraOptions
    peft_class = "AdaLoraConfig"
    default_lr = 3.2e-2
    lr_source = WIDE_GRID + "; Zhang et al. 2023 use 8e-4 for SST-2 on DeBERTaV3-base (24 epochs)"
    description = "LoRA in SVD form with its rank budget moved between layers (peft AdaLoraConfig)"
    markers = ("lora_", "modules_to_save")
    group = "lora-family"
    optimizers = ("adamw", "loraplus")

    def option_problems(self, config: Any, where: str) -> list[Problem]:
        if config.target_r <= config.init_r:
            return []
        return [
            Problem(
                f"{where}: method.target_r",
                f"target_r {config.target_r} is above init_r {config.init_r}: AdaLoRA only "
                "prunes ranks",
                "set method.target_r <= method.init_r",
            )
        ]

    peft_names: ClassVar[dict[str, str]] = {
        "alpha": "lora_alpha",
        "dropout": "lora_dropout",
        "interval": "deltaT",
    }
    peft_skip = ("warmup", "final")  # fractions of the run: `schedule` makes them peft's steps

    def tuner_options(self, cfg: Any, ctx: MethodContext) -> dict[str, object]:
        if ctx.plan is None:
            raise FinetuneError(
                "method adalora needs the run's planned step count to schedule its ranks",
                fix="this is a bug: RunSetup.for_training hands the method its plan",
            )
        return {**super().tuner_options(cfg, ctx), **schedule(cfg, ctx.plan.total_steps)}

    # peft's AdaLoraModel keeps one trainable adapter: each run loads on a base of its own
    multi_adapter = False

    def load(self, model: Model, in_dir: Path, ctx: MethodContext) -> Model:
        """peft's load, then the adapter named trainable again: AdaLoraModel.forward reads
        `trainable_adapter_name` (for its orthogonality loss) whenever labels are given, and
        peft sets it only when training, so an evaluation with labels would fail
        (AttributeError in peft 0.21). The loss then matches the one logged in training."""
        loaded = super().load(model, in_dir, ctx)
        setattr(peft_model(loaded).base_model, TRAINABLE_ATTR, "default")
        return loaded

    def step_hook(self, model: Model) -> Callable[[int], None] | None:
        tuner = cast("AdaLoraModel", peft_model(model).base_model)  # what AdaLoraConfig wraps
        return AdaLoraSteps(tuner)


TRAINABLE_ATTR = "trainable_adapter_name"  # on peft's AdaLoraModel (an untyped attribute)


class AllocatorState(TypedDict):
    """What a checkpoint keeps of AdaLoRA's schedule: the ranks kept so far and the
    allocator's running importance scores (per parameter name)."""

    rank_pattern: dict[str, list[bool]] | None
    ipt: dict[str, Tensor]
    exp_avg_ipt: dict[str, Tensor]
    exp_avg_unc: dict[str, Tensor]


class AdaLoraSteps:
    """peft's `update_and_allocate(step)` after every optimizer step (importance scores from
    this step's gradients, then the mask of the pruned singular values), with the allocator's
    running scores and the ranks kept so far as checkpoint state: `--resume` continues the
    same schedule instead of starting the scores over."""

    def __init__(self, tuner: AdaLoraModel) -> None:
        self.tuner = tuner

    def __call__(self, step: int) -> None:
        self.tuner.update_and_allocate(step)

    def config(self) -> AdaLoraConfig:
        return cast("AdaLoraConfig", self.tuner.peft_config[self.tuner.trainable_adapter_name])

    def state_dict(self) -> AllocatorState:
        allocator = self.tuner.rankallocator
        config = self.config()
        return {
            "rank_pattern": config.rank_pattern,
            "ipt": allocator.ipt,
            "exp_avg_ipt": allocator.exp_avg_ipt,
            "exp_avg_unc": allocator.exp_avg_unc,
        }

    def load_state_dict(self, state: AllocatorState) -> None:
        allocator = self.tuner.rankallocator
        config = self.config()
        config.rank_pattern = state["rank_pattern"]
        allocator.ipt = state["ipt"]
        allocator.exp_avg_ipt = state["exp_avg_ipt"]
        allocator.exp_avg_unc = state["exp_avg_unc"]
