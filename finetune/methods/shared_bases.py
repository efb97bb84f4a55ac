"""VeRA, RandLoRA and VB-LoRA: low-rank updates whose factors are shared across layers, so
each layer trains only a few scaling vectors or mixing logits.

VeRA freezes one pair of random matrices (A, B) shared by every layer and trains two vectors per
layer that scale them: Λb·B·Λd·A. RandLoRA sums several frozen random bases per layer, each
scaled by trained diagonal matrices, reaching full rank with few parameters. VB-LoRA trains one
vector bank shared by all layers, from which every layer's A and B are composed by a top-k
mixture of its own logits. All three fold into the weights (mergeable); the frozen random
matrices are saved with the adapter (`save_projection`), so it loads without the seed.
"""

from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import Field

from finetune.methods.tuner import WIDE_GRID, TargetModules, TunerMethod, targets_field
from finetune.recipe.section import Section


class VeraOptions(Section):
    name: Literal["vera"] = Field(
        description="Method: VeRA (shared frozen random low-rank pair, trained scaling vectors)."
    )
    r: int = Field(256, ge=1, le=8192, description="Rank of the shared random matrices.")
    d_initial: float = Field(0.1, gt=0, description="Initial value of the scaling vector d.")
    dropout: float = Field(0.0, ge=0, lt=1, description="Dropout on the VeRA input.")
    projection_seed: int = Field(0, ge=0, description="Seed of the shared random matrices.")
    target_modules: TargetModules = targets_field()


class RandLoraOptions(Section):
    name: Literal["randlora"] = Field(
        description="Method: RandLoRA (sum of scaled frozen random bases, full rank)."
    )
    r: int = Field(32, ge=1, le=8192, description="Rank of each random basis.")
    alpha: float = Field(640.0, gt=0, description="Scaling numerator (alpha / r), as in peft.")
    sparse: bool = Field(False, description="Sparse ternary random bases (1/6 non-zero).")
    dropout: float = Field(0.0, ge=0, lt=1, description="Dropout on the RandLoRA input.")
    projection_seed: int = Field(0, ge=0, description="Seed of the random bases.")
    target_modules: TargetModules = targets_field()


class VBLoraOptions(Section):
    name: Literal["vblora"] = Field(
        description="Method: VB-LoRA (every layer's factors mixed from one shared vector bank)."
    )
    r: int = Field(4, ge=1, le=1024, description="Rank of each layer's update.")
    num_vectors: int = Field(256, ge=2, description="Vectors in the shared bank.")
    vector_length: int = Field(
        64, ge=1, description="Length of each bank vector; must divide the adapted layers' sizes."
    )
    topk: int = Field(2, ge=1, description="Bank vectors mixed into each sub-vector.")
    dropout: float = Field(0.0, ge=0, lt=1, description="Dropout on the VB-LoRA input.")
    target_modules: TargetModules = targets_field()


class VeraMethod(TunerMethod):
    name = "vera"
    config_class = VeraOptions
    peft_class = "VeraConfig"
    has_exclude = False
    default_lr = 3.2e-2
    lr_source = WIDE_GRID + "; Kopiczko et al. 2024 (VeRA) use 4e-3 for SST-2 on RoBERTa-base"
    description = "shared frozen random A, B; per-layer trained scaling vectors (peft VeraConfig)"
    markers = ("vera_lambda_", "modules_to_save")
    # the scaling vectors start at d_initial and 0: decay would pull d toward 0
    no_decay = ("vera_lambda_",)
    group = "lora-family"

    peft_names: ClassVar[dict[str, str]] = {
        "dropout": "vera_dropout",
        "projection_seed": "projection_prng_key",
    }
    # the saved adapter holds its projections, so it loads without the seed's generator
    peft_fixed: ClassVar[dict[str, object]] = {"save_projection": True}


class RandLoraMethod(TunerMethod):
    name = "randlora"
    config_class = RandLoraOptions
    peft_class = "RandLoraConfig"
    has_exclude = False
    default_lr = 1e-3
    lr_source = WIDE_GRID
    description = "sum of frozen random bases with trained diagonal scales (peft RandLoraConfig)"
    markers = ("randlora_lambda", "randlora_gamma", "modules_to_save")
    no_decay = ("randlora_lambda", "randlora_gamma")
    group = "lora-family"

    peft_names: ClassVar[dict[str, str]] = {
        "alpha": "randlora_alpha",
        "dropout": "randlora_dropout",
        "projection_seed": "projection_prng_key",
    }
    peft_fixed: ClassVar[dict[str, object]] = {"save_projection": True}


class VBLoraMethod(TunerMethod):
    name = "vblora"
    config_class = VBLoraOptions
    peft_class = "VBLoRAConfig"
    default_lr = 8e-3
    lr_source = WIDE_GRID
    description = (
        "every layer's low-rank factors mixed from one shared vector bank (peft VBLoRAConfig)"
    )
    markers = ("vblora_", "modules_to_save")
    group = "lora-family"

    peft_names: ClassVar[dict[str, str]] = {"dropout": "vblora_dropout"}
