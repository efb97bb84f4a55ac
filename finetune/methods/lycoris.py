"""LoHa and LoKr (the LyCORIS family in peft): weight updates built from Hadamard or Kronecker
products of small factors instead of LoRA's one product B·A.

LoHa's update is (B1·A1) ⊙ (B2·A2): two rank-r products multiplied elementwise, so its rank can
reach r², at twice LoRA's parameters. LoKr's is W1 ⊗ (B·A): a small full block Kronecker-times
a low-rank one. Both fold into the weight (mergeable), both are saved in peft's format.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from finetune.methods.tuner import WIDE_GRID, TargetModules, TunerMethod, targets_field
from finetune.recipe.section import Section


class LoHaOptions(Section):
    name: Literal["loha"] = Field(
        description="Method: LoHa (Hadamard product of two low-rank updates)."
    )
    r: int = Field(8, ge=1, le=1024, description="Rank of each of the two factors.")
    alpha: float = Field(8.0, gt=0, description="Scaling numerator (alpha / r).")
    rank_dropout: float = Field(0.0, ge=0, lt=1, description="Dropout on the update's rows.")
    module_dropout: float = Field(
        0.0, ge=0, lt=1, description="Probability of skipping a whole adapted layer in training."
    )
    target_modules: TargetModules = targets_field()


class LoKrOptions(Section):
    name: Literal["lokr"] = Field(description="Method: LoKr (Kronecker product update).")
    r: int = Field(8, ge=1, le=1024, description="Rank of the low-rank Kronecker factor.")
    alpha: float = Field(8.0, gt=0, description="Scaling numerator (alpha / r).")
    rank_dropout: float = Field(0.0, ge=0, lt=1, description="Dropout on the update's rows.")
    module_dropout: float = Field(
        0.0, ge=0, lt=1, description="Probability of skipping a whole adapted layer in training."
    )
    decompose_both: bool = Field(
        False, description="Also write the small Kronecker factor as a low-rank product."
    )
    decompose_factor: int = Field(
        -1, ge=-1, description="Size of the small factor's side; -1: as square as possible."
    )
    target_modules: TargetModules = targets_field()


class LoHaMethod(TunerMethod):
    name = "loha"
    config_class = LoHaOptions
    peft_class = "LoHaConfig"
    linear_only = True
    default_lr = 8e-3
    lr_source = WIDE_GRID
    description = "Hadamard product of two low-rank updates (peft LoHaConfig)"
    markers = ("hada_", "modules_to_save")
    group = "lora-family"


class LoKrMethod(TunerMethod):
    name = "lokr"
    config_class = LoKrOptions
    peft_class = "LoKrConfig"
    linear_only = True
    default_lr = 8e-3
    lr_source = WIDE_GRID
    description = "Kronecker product of a small block and a low-rank factor (peft LoKrConfig)"
    markers = ("lokr_", "modules_to_save")
    group = "lora-family"
