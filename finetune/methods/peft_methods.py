"""peft-backed methods: thin mappings from recipe sections onto peft configs.

The classification head and any newly initialised modules go into `modules_to_save`
explicitly, so that they train and are saved with the adapter whatever the head is called
(peft only guesses 'classifier'/'score'; peft#310, #577, #876).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from finetune.methods.base import Method, MethodContext

PEFT_TASK_TYPES = {"classification": "SEQ_CLS", "seq2seq": "SEQ_2_SEQ_LM", "causal": "CAUSAL_LM"}


def resolve_targets(value: Any, default: tuple[str, ...]) -> Any:
    if value == "auto":
        return list(default)
    return value  # "all-linear" or an explicit list, both understood by peft


class PeftMethod(Method):
    """Shared save/load/merge for every method whose weights peft owns."""

    mergeable = True

    def peft_config(self, ctx: MethodContext) -> Any:  # pragma: no cover - abstract
        raise NotImplementedError

    markers: tuple[str, ...] = ("lora_", "modules_to_save", "ia3_l", "prompt_encoder")

    def owns_parameter(self, name: str) -> bool:
        return any(marker in name for marker in self.markers)

    def apply(self, model: Any, ctx: MethodContext) -> Any:
        from peft import get_peft_model

        return get_peft_model(model, self.peft_config(ctx))

    def save(self, model: Any, out_dir: Path) -> None:
        model.save_pretrained(out_dir, safe_serialization=True)

    def load(self, model: Any, in_dir: Path, ctx: MethodContext) -> Any:
        from peft import PeftModel

        return PeftModel.from_pretrained(model, str(in_dir), is_trainable=False)

    def merge(self, model: Any) -> Any:
        return model.merge_and_unload()


class LoraMethod(PeftMethod):
    name = "lora"
    description = "low-rank updates on the attention projections (peft LoraConfig)"

    def peft_config(self, ctx: MethodContext) -> Any:
        from peft import LoraConfig

        cfg = ctx.config
        return LoraConfig(
            task_type=PEFT_TASK_TYPES.get(ctx.task_kind),
            r=cfg.r,
            lora_alpha=cfg.alpha,
            lora_dropout=cfg.dropout,
            target_modules=resolve_targets(cfg.target_modules, ctx.family.lora_targets),
            bias=cfg.bias,
            use_dora=self.name == "dora",
            use_rslora=self.name == "rslora",
            modules_to_save=list(ctx.new_modules) or None,
        )


class DoraMethod(LoraMethod):
    name = "dora"
    description = "LoRA with the weight split into magnitude and direction (use_dora)"


class RsLoraMethod(LoraMethod):
    name = "rslora"
    description = "LoRA scaled by alpha/sqrt(r), stable at high rank (use_rslora)"
