"""The accelerator step: one Accelerator per process, on the GPU when there is one, with the
mixed precision the recipe resolves to on this machine (train/precision.py); the same rule for
training, `eval` and `predict`."""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import TYPE_CHECKING

from finetune.errors import FinetuneError

if TYPE_CHECKING:  # pragma: no cover
    from typing_extensions import Unpack

    from finetune.models.architecture import Architecture
    from finetune.recipe.schema import Recipe
    from finetune.run.trackers import TrackerKwargs
    from finetune.types import Accelerator

log = logging.getLogger(__name__)


def precision_for(recipe: Recipe) -> str:
    """Accelerate's `mixed_precision` for this recipe on this machine (train/precision.py)."""
    from finetune.train.precision import ACCELERATE_NAMES, resolve_precision

    return ACCELERATE_NAMES[resolve_precision(recipe.train.precision, _architecture(recipe))]


def _architecture(recipe: Recipe) -> Architecture | None:
    from finetune.setup.architecture import recipe_architecture

    try:
        return recipe_architecture(recipe)
    except FinetuneError:  # reported by validate; the precision rule then assumes no family
        return None


def setup_accelerator(recipe: Recipe, run_dir: Path | None = None) -> Accelerator:
    """The training Accelerator. No gradient_accumulation_steps: the loop accumulates itself,
    weighting micro-batches by their label tokens (Accelerate would divide every micro-batch by
    grad_accum); `train.report_to` adds log_with + project_dir."""
    from finetune.run.trackers import accelerator_kwargs

    return new_accelerator(precision_for(recipe), **accelerator_kwargs(recipe, run_dir))


def inference_accelerator(recipe: Recipe) -> Accelerator:
    """The one device choice of `eval` and `predict`: the GPU when there is one, else CPU, with
    the mixed precision the run trained in (a recipe's fp16 on a machine without CUDA: fp32)."""
    return new_accelerator(inference_precision(recipe))


def inference_precision(recipe: Recipe) -> str:
    """`inference_accelerator`'s mixed precision for this run's recipe on this machine."""
    try:
        return precision_for(recipe)
    except FinetuneError:
        return "no"


def new_accelerator(mixed_precision: str, **kwargs: Unpack[TrackerKwargs]) -> Accelerator:
    """An Accelerator on the GPU when there is one, with this mixed precision.

    Accelerate keeps one process-wide state and refuses a second Accelerator with another
    precision; a single process (tests, `compare`, eval after run) may legitimately change it,
    so the state is reset there. Launched processes (WORLD_SIZE > 1) never reach this twice.
    """
    from accelerate import Accelerator
    from accelerate.state import AcceleratorState

    current = AcceleratorState._shared_state.get("_mixed_precision")
    single = int(os.environ.get("WORLD_SIZE", "1")) == 1
    if current is not None and current != mixed_precision and single:
        AcceleratorState._reset_state()
    accelerator = Accelerator(mixed_precision=mixed_precision, cpu=not cuda_available(), **kwargs)
    wanted_fsdp = os.environ.get("ACCELERATE_USE_FSDP", "false").lower() == "true"
    if wanted_fsdp and str(accelerator.distributed_type.value) != "FSDP":
        log.warning(
            "an FSDP config was given but accelerate uses FSDP only on GPUs: this run trains "
            "as %s (every process holds the whole model)",
            accelerator.distributed_type.value,
        )
    return accelerator


def cuda_available() -> bool:
    """One seam for "is there a GPU" (tests patch it to check which device is asked for)."""
    import torch

    return torch.cuda.is_available()
