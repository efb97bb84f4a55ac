"""BitFit (Ben Zaken et al. 2022): only the bias terms of the backbone train, plus new modules.

Saved in our own format (only the trained tensors), like the bottleneck adapters. A family
whose layers carry no biases (T5) is rejected up front: BitFit would train only the head.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Literal

from pydantic import Field

from finetune.methods.base import Method, MethodContext, freeze_all_but
from finetune.methods.saved import (
    PLAN_ATTR,
    AdapterPlan,
    attach_plan,
    attached_plan,
    load_trained,
    read_adapter_config,
    save_trained,
)
from finetune.recipe.section import Section

if TYPE_CHECKING:  # pragma: no cover
    from finetune.models.architecture import Architecture
    from finetune.types import Model, PretrainedModel, StateDict

NO_BIASES = (
    "these layers have no bias terms (bias-free linear layers and RMS or bias-free layer norm), "
    "so BitFit would train only the head; use LoRA, IA3 or a bottleneck adapter"
)


def is_bias(name: str) -> bool:
    """A bias parameter by name (Linear/Conv1D/LayerNorm `.bias`)."""
    return name == "bias" or name.endswith(".bias")


class BitFitOptions(Section):
    name: Literal["bitfit"] = Field(description="Method: only bias terms (and the head) train.")


class BitFitMethod(Method):
    name = "bitfit"
    config_class = BitFitOptions
    default_lr = 1e-3
    lr_source = (
        "Ben Zaken et al. 2022 searched 1e-4..1e-3 for BERT-base; 1e-3 won on our SST-2 budget"
    )
    mergeable = True
    library = "finetune"  # adapter_model.safetensors + adapter_config.json of our own
    description = "only the bias terms (and the head) train"

    def unsupported_reason(self, family: Architecture, task_kind: str) -> str | None:
        return None if family.has_biases else NO_BIASES

    def owns_parameter(self, name: str, config: object = None) -> bool:
        return is_bias(name)

    def apply(self, model: Model, ctx: MethodContext) -> Model:
        self.set_trainable(model, {"method": self.name, "new_modules": list(ctx.new_modules)})
        return model

    def set_trainable(self, model: Model, plan: AdapterPlan) -> None:
        """Biases and new modules train; a bias tied into a new module stays frozen."""
        freeze_all_but(model, plan["new_modules"])
        for name, param in model.named_parameters():
            if is_bias(name):
                param.requires_grad_(True)
        attach_plan(model, plan)

    def save(self, model: Model, out_dir: Path, state_dict: StateDict | None = None) -> None:
        save_trained(model, out_dir, attached_plan(model), self.name, state_dict)

    def load(self, model: Model, in_dir: Path, ctx: MethodContext) -> Model:
        self.set_trainable(model, read_adapter_config(in_dir, self.name))
        return load_trained(model, in_dir)

    def merge(self, model: Model) -> PretrainedModel:
        """BitFit changes base tensors in place: the loaded model is already the merged one."""
        from finetune.models.memory import transformers_model

        model.__dict__.pop(PLAN_ATTR, None)
        return transformers_model(model)  # the loaded base itself
