"""BitFit (Ben Zaken et al. 2022): only the bias terms of the backbone train, plus new modules.

Saved in our own format (only the trained tensors), like the bottleneck adapters. A family
whose layers carry no biases (T5) is rejected up front: BitFit would train only the head.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from pydantic import Field

from finetune.methods.base import Method, MethodContext, freeze_all_but
from finetune.methods.saved import load_trained, read_adapter_config, save_trained
from finetune.recipe.section import Section

if TYPE_CHECKING:  # pragma: no cover
    from finetune.models.architecture import Architecture

NO_BIASES = (
    "these layers have no bias terms (bias-free linear layers and RMS or bias-free layer norm), "
    "so BitFit would train only the head; use LoRA, IA3 or a bottleneck adapter"
)


def is_bias(name: str) -> bool:
    """A bias parameter by name (Linear/Conv1D/LayerNorm `.bias`)."""
    return name == "bias" or name.endswith(".bias")


class BitFitConfig(Section):
    name: Literal["bitfit"] = Field(description="Method: only bias terms (and the head) train.")


class BitFitMethod(Method):
    name = "bitfit"
    config_class = BitFitConfig
    default_lr = 1e-3
    lr_source = (
        "Ben Zaken et al. 2022 searched 1e-4..1e-3 for BERT-base; 1e-3 won on our SST-2 budget"
    )
    mergeable = True
    save_format = "finetune safetensors (adapter_model.safetensors + adapter_config.json)"
    description = "only the bias terms (and the head) train"

    def unsupported_reason(self, family: Architecture, task_kind: str) -> str | None:
        return None if family.has_biases else NO_BIASES

    def owns_parameter(self, name: str, config: Any = None) -> bool:
        return is_bias(name)

    def apply(self, model: Any, ctx: MethodContext) -> Any:
        self.set_trainable(model, {"method": self.name, "new_modules": list(ctx.new_modules)})
        return model

    def set_trainable(self, model: Any, plan: dict[str, Any]) -> None:
        """Biases and new modules train; a bias tied into a new module stays frozen."""
        freeze_all_but(model, plan["new_modules"])
        for name, param in model.named_parameters():
            if is_bias(name):
                param.requires_grad_(True)
        model.finetune_adapter_config = plan

    def save(self, model: Any, out_dir: Path, state_dict: dict[str, Any] | None = None) -> None:
        save_trained(model, out_dir, model.finetune_adapter_config, self.name, state_dict)

    def load(self, model: Any, in_dir: Path, ctx: MethodContext) -> Any:
        self.set_trainable(model, read_adapter_config(in_dir, self.name))
        return load_trained(model, in_dir)

    def merge(self, model: Any) -> Any:
        """BitFit changes base tensors in place: the loaded model is already the merged one."""
        model.__dict__.pop("finetune_adapter_config", None)
        return model
