"""OFT, BOFT and HRA: the base weight is multiplied by a trained orthogonal matrix instead of
having an update added to it, which keeps the angles between its neurons (the "hyperspherical
energy") unchanged.

OFT's rotation is block-diagonal (blocks of `block_size`, Cayley-parametrised); BOFT builds a
dense rotation from a butterfly product of sparse block-diagonal ones; HRA chains r Householder
reflections. Each starts at the identity, folds into the weight (mergeable: W' = R·W) and is
saved in peft's format.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, ClassVar, Literal

from pydantic import Field

from finetune.methods.tuner import GRID, GRID_TOP, TargetModules, TunerMethod, targets_field
from finetune.recipe.section import Section

if TYPE_CHECKING:  # pragma: no cover
    from finetune.methods.base import MethodContext
    from finetune.types import Model


class OFTOptions(Section):
    name: Literal["oft"] = Field(
        description="Method: OFT (block-diagonal orthogonal rotation of each weight)."
    )
    block_size: int = Field(
        32, ge=1, description="Size of each orthogonal block; must divide the layers' input size."
    )
    coft: bool = Field(False, description="Constrained OFT: keep the rotation within eps of I.")
    eps: float = Field(6e-5, gt=0, description="Constrained OFT's radius.")
    block_share: bool = Field(False, description="One block shared by the whole layer.")
    module_dropout: float = Field(
        0.0, ge=0, lt=1, description="Probability of dropping whole blocks in training."
    )
    target_modules: TargetModules = targets_field()


class BOFTOptions(Section):
    name: Literal["boft"] = Field(
        description="Method: BOFT (butterfly-factorised orthogonal rotation)."
    )
    block_size: int = Field(4, ge=0, description="Size of each block (0: set by block_num).")
    block_num: int = Field(0, ge=0, description="Blocks per layer (0: set by block_size).")
    butterfly_factors: int = Field(
        1, ge=1, description="Butterfly factors (1: plain block-diagonal OFT)."
    )
    dropout: float = Field(0.0, ge=0, lt=1, description="Multiplicative dropout of blocks.")
    target_modules: TargetModules = targets_field()


class HRAOptions(Section):
    name: Literal["hra"] = Field(description="Method: HRA (chain of Householder reflections).")
    r: int = Field(8, ge=1, le=1024, description="Number of Householder reflections.")
    apply_gs: bool = Field(False, description="Gram-Schmidt-orthogonalise the reflection vectors.")
    target_modules: TargetModules = targets_field()


class OFTMethod(TunerMethod):
    name = "oft"
    config_class = OFTOptions
    peft_class = "OFTConfig"
    linear_only = True
    default_lr = 2e-3
    lr_source = GRID
    description = "block-diagonal orthogonal rotation of each adapted weight (peft OFTConfig)"
    markers = ("oft_", "modules_to_save")

    peft_names: ClassVar[dict[str, str]] = {"block_size": "oft_block_size"}
    peft_fixed: ClassVar[dict[str, object]] = {"r": 0}  # the block size sets the blocks


class BOFTMethod(TunerMethod):
    name = "boft"
    config_class = BOFTOptions
    peft_class = "BOFTConfig"
    linear_only = True
    default_lr = 8e-3
    lr_source = GRID_TOP
    description = "orthogonal rotation as a butterfly product of sparse blocks (peft BOFTConfig)"
    markers = ("boft_", "modules_to_save")
    no_decay = ("boft_s",)  # the output scale starts at 1

    peft_names: ClassVar[dict[str, str]] = {
        "block_size": "boft_block_size",
        "block_num": "boft_block_num",
        "butterfly_factors": "boft_n_butterfly_factor",
        "dropout": "boft_dropout",
    }

    # peft builds BOFT's CUDA extension under CC=CXX=gcc on every layer and, when the build
    # fails (every CPU-only install), leaves them set: see compilers_kept
    def apply(self, model: Model, ctx: MethodContext) -> Model:
        with compilers_kept():
            return super().apply(model, ctx)

    def load(self, model: Model, in_dir: Path, ctx: MethodContext) -> Model:
        with compilers_kept():
            return super().load(model, in_dir, ctx)

    def load_named(
        self, model: Model, in_dir: Path, ctx: MethodContext, adapter_name: str
    ) -> Model:
        with compilers_kept():
            return super().load_named(model, in_dir, ctx, adapter_name)


@contextlib.contextmanager
def compilers_kept() -> Iterator[None]:
    """CC and CXX as they were. peft's BOFT layer sets both to gcc to build its CUDA extension
    and restores them only when the build succeeds; after a failed build every C++ kernel that
    torch.compile builds later, in this process or its children, is linked by the C driver
    without libstdc++ and fails to load (`undefined symbol ... basic_ostringstream`)."""
    saved = {key: os.environ.get(key) for key in ("CC", "CXX")}
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


class HRAMethod(TunerMethod):
    name = "hra"
    config_class = HRAOptions
    peft_class = "HRAConfig"
    linear_only = True
    default_lr = 8e-3
    lr_source = GRID_TOP
    description = "a chain of r trained Householder reflections of each weight (peft HRAConfig)"
    markers = ("hra_", "modules_to_save")

    peft_names: ClassVar[dict[str, str]] = {"apply_gs": "apply_GS"}
