"""Full fine-tuning: the baseline every adapter is compared against."""

from __future__ import annotations

import re
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from pydantic import Field

from finetune.methods.base import Method, MethodContext
from finetune.recipe.section import Section

if TYPE_CHECKING:  # pragma: no cover
    from finetune.types import Model, PretrainedModel, StateDict


class FullOptions(Section):
    name: Literal["full"] = Field(description="Method: every weight trains.")


class FullMethod(Method):
    name = "full"
    config_class = FullOptions
    default_lr = 5e-5
    lr_source = "the usual BERT-size full fine-tuning rate (Devlin et al. 2019 searched 2e-5..5e-5)"
    mergeable = True
    trains_backbone = True
    description = "every weight trains; saves the whole model"
    artifact_dir = "model"
    library = "transformers"  # the whole model, save_pretrained in safetensors
    group = "full"

    def apply(self, model: Model, ctx: MethodContext) -> Model:
        fixed = rebuilt_keys(model)
        for name, param in model.named_parameters():
            param.requires_grad_(not any(re.search(pattern, name) for pattern in fixed))
        return model

    def save(self, model: Model, out_dir: Path, state_dict: StateDict | None = None) -> None:
        from finetune.models.memory import transformers_model

        pretrained = transformers_model(model)  # the model itself: full wraps nothing
        pretrained.save_pretrained(out_dir, safe_serialization=True, state_dict=state_dict)

    def load(self, model: Model, in_dir: Path, ctx: MethodContext) -> Model:
        from safetensors.torch import load_file

        state: StateDict = {}
        for shard in sorted(in_dir.glob("*.safetensors")):
            state.update(load_file(str(shard)))
        missing, unexpected = model.load_state_dict(state, strict=False)
        if unexpected:  # saved under a legacy key name (GPT-NeoX: lm_head -> embed_out)
            state = renamed_state(model, in_dir)
            missing, unexpected = model.load_state_dict(state, strict=False)
        # tied weights (T5/GPT-2 embeddings <-> lm_head) are saved once; they share storage
        current = model.state_dict()
        loaded_ptrs = {current[k].data_ptr() for k in state if k in current}
        untied = [k for k in missing if current[k].data_ptr() not in loaded_ptrs]
        # weights the model rebuilds itself (Marian's sinusoidal positions) are never saved
        fixed = rebuilt_keys(model)
        untied = [k for k in untied if not any(re.search(pattern, k) for pattern in fixed)]
        if untied or unexpected:
            raise RuntimeError(
                f"saved model in {in_dir} does not match the base model: "
                f"missing={untied[:5]} unexpected={list(unexpected)[:5]}"
            )
        return model

    def merge(self, model: Model) -> PretrainedModel:
        from finetune.models.memory import transformers_model

        return transformers_model(model)  # the model itself: full wraps nothing


def rebuilt_keys(model: Model) -> list[str]:
    """Weights the model computes itself and never saves (Marian's sinusoidal positions): they
    must not train, or the saved run would not reproduce the trained model."""
    return list(getattr(model, "_keys_to_ignore_on_load_missing", None) or [])


def renamed_state(model: Model, in_dir: Path) -> StateDict:
    """The saved weights under the model's own parameter names: transformers' from_pretrained
    applies the checkpoint key conversions that save_pretrained applied in reverse."""
    from finetune.models.memory import transformers_model

    return type(transformers_model(model)).from_pretrained(str(in_dir)).state_dict()
