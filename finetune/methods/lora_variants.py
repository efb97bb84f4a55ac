"""What LoRA (and DoRA, rsLoRA) does beyond peft's plain mapping: its initialisations with
their save-time conversion (methods/lora_init.py), the options `validate` checks, the runs
`merge` refuses, and adapter arithmetic (methods/arithmetic.py). A mixin of `LoraMethod`, so
the peft mapping itself stays in peft_methods.py."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

if TYPE_CHECKING:  # pragma: no cover
    from peft import LoraConfig, PeftConfig

    from finetune.errors import Problem
    from finetune.methods.base import MethodContext
    from finetune.types import Model, StateDict


class LoraVariants:
    name: str = ""
    arithmetic = True  # `merge-adapters`: peft's add_weighted_adapter

    def option_problems(self, config: Any, where: str) -> list[Problem]:
        from finetune.methods.lora_init import init_problems

        return init_problems(config, where)

    def wrap(self, model: Model, config: PeftConfig, ctx: MethodContext) -> Model:
        from finetune.methods.lora_init import apply_lora

        return apply_lora(model, cast("LoraConfig", config), ctx)  # what LoraMethod made

    def save(self, model: Model, out_dir: Path, state_dict: StateDict | None = None) -> None:
        """PiSSA/OLoRA/CorDA runs are saved converted onto the original weights (lora_init)."""
        from finetune.methods.guards import check_saved_adapter
        from finetune.methods.lora_init import initial_adapter, keep_other_tensors
        from finetune.methods.wrapped import peft_model

        initial = initial_adapter(model)
        peft_model(model).save_pretrained(
            str(out_dir),
            safe_serialization=True,
            state_dict=state_dict,
            path_initial_model_for_weight_conversion=initial,
        )
        if initial is not None:
            keep_other_tensors(model, out_dir, state_dict)
        check_saved_adapter(out_dir, self.name)

    def merge_refusal(self, config: Any) -> str | None:
        if getattr(config, "init", None) == "loftq":
            return (
                "a LoftQ adapter corrects the quantisation error of its 4-bit base: folded into "
                "the full-precision weights it would add that correction twice"
            )
        return None

    def combine(
        self, model: Model, names: list[str], weights: list[float], how: str, density: float
    ) -> int:
        from finetune.methods.arithmetic import combine_lora

        return combine_lora(model, names, weights, how, density)
