"""P-tuning (Liu et al. 2021): virtual tokens produced by a small trained prompt encoder (an
MLP or LSTM over trainable embeddings) and prepended to the input embeddings.

Like prompt tuning it feeds input embeddings, so it cannot serve the classifiers that do not
accept them; nothing folds into the weights (not mergeable). Saved in peft's format: the
encoder's output embeddings, which is all inference needs.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal

from pydantic import Field

from finetune.methods.base import MethodContext
from finetune.methods.peft_methods import (
    PEFT_TASK_TYPES,
    PromptLearningMethod,
    PromptMethod,
    prompt_dims,
)
from finetune.methods.tuner import GRID_TOP
from finetune.recipe.section import Section

if TYPE_CHECKING:  # pragma: no cover
    from peft import PeftConfig

    from finetune.models.architecture import Architecture
    from finetune.types import Model


class PTuningOptions(Section):
    name: Literal["ptuning"] = Field(
        description="Method: P-tuning (virtual tokens from a trained prompt encoder)."
    )
    num_virtual_tokens: int = Field(20, ge=1, le=512, description="Virtual tokens prepended.")
    encoder: Literal["MLP", "LSTM"] = Field("MLP", description="The prompt encoder.")
    encoder_hidden_size: int | None = Field(
        None, ge=1, description="Encoder width; null: the model's hidden size."
    )
    encoder_layers: int = Field(2, ge=1, le=8, description="Encoder layers.")
    encoder_dropout: float = Field(0.0, ge=0, lt=1, description="Dropout in the encoder.")


class PTuningMethod(PromptLearningMethod):
    name = "ptuning"
    config_class = PTuningOptions
    default_lr = 8e-3
    lr_source = GRID_TOP
    description = "virtual tokens from a trained MLP/LSTM prompt encoder (peft PromptEncoderConfig)"

    def unsupported_reason(self, family: Architecture, task_kind: str) -> str | None:
        return PromptMethod().unsupported_reason(family, task_kind)

    def peft_config(self, model: Model, ctx: MethodContext) -> PeftConfig:
        from peft import PromptEncoderConfig

        cfg = ctx.config
        dims = prompt_dims(model)
        hidden = cfg.encoder_hidden_size or dims.get("token_dim") or _hidden_size(model)
        return PromptEncoderConfig(
            task_type=PEFT_TASK_TYPES[ctx.task_kind],
            num_virtual_tokens=cfg.num_virtual_tokens,
            encoder_reparameterization_type=cfg.encoder,
            encoder_hidden_size=hidden,
            encoder_num_layers=cfg.encoder_layers,
            encoder_dropout=cfg.encoder_dropout,
            modules_to_save=list(ctx.new_modules) or None,
            **dims,
        )


def _hidden_size(model: Model) -> int:
    config: object = model.config
    for key in ("hidden_size", "d_model", "n_embd", "dim"):
        if getattr(config, key, None):
            return int(getattr(config, key))
    raise ValueError("cannot find the model's hidden size for the prompt encoder")
