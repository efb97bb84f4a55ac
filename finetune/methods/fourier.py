"""FourierFT (Gao et al. 2024): each weight update is the inverse 2-D Fourier transform of a
few trained spectral coefficients at random, fixed frequencies.

`n_frequency` coefficients per layer (their positions drawn from `random_seed`, saved with the
adapter) times `scaling` give ΔW; far fewer parameters than LoRA at the same budget. The update
folds into the weight (mergeable) and is saved in peft's format.
"""

from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import Field

from finetune.methods.tuner import TargetModules, TunerMethod, targets_field
from finetune.recipe.section import Section


class FourierFTOptions(Section):
    name: Literal["fourierft"] = Field(
        description="Method: FourierFT (trained spectral coefficients of each update)."
    )
    n_frequency: int = Field(
        1000, ge=1, description="Trained coefficients per layer (at most in x out)."
    )
    scaling: float = Field(150.0, gt=0, description="Scale of the inverse transform's output.")
    random_seed: int = Field(777, ge=0, description="Seed of the frequencies' positions.")
    target_modules: TargetModules = targets_field()


class FourierFTMethod(TunerMethod):
    name = "fourierft"
    config_class = FourierFTOptions
    peft_class = "FourierFTConfig"
    default_lr = 5e-2
    lr_source = "Gao et al. 2024 (FourierFT), SST-2 on RoBERTa-base: 5e-2"
    description = "trained spectral coefficients at fixed random frequencies (peft FourierFTConfig)"
    markers = ("fourierft_spectrum", "modules_to_save")
    group = "lora-family"

    peft_names: ClassVar[dict[str, str]] = {"random_seed": "random_loc_seed"}
