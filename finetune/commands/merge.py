"""`finetune merge`: fold the adapter into the base weights, checked against the adapter's
outputs on real inputs (finetune/pipeline/merging.py), into a plain transformers model."""

from __future__ import annotations

from pathlib import Path

from finetune.errors import FinetuneError, RunDirError
from finetune.methods import METHODS
from finetune.pipeline.merging import MergeResult, merge
from finetune.setup.run_setup import RunSetup, read_run_dir


def refuse_untrained(run_dir: Path, verb: str) -> None:
    """A zero-shot run (a method that trains nothing) has no weights to merge or push."""
    recipe, info = read_run_dir(run_dir)
    method = METHODS[info.method]
    if not method.trains:
        raise FinetuneError(
            f"{run_dir}: a zero-shot run (method {method.name}): nothing was trained, so there "
            f"is nothing to {verb}",
            fix=f"use the base model {recipe.model.name} itself; its scores are in "
            f"{run_dir}/metrics.json",
        )


def merge_run(
    run_dir: Path,
    out: Path,
    overwrite: bool = False,
    tolerance: float = 1e-4,
    card_ref: str | None = None,
) -> MergeResult:
    if out.exists() and any(out.iterdir()) and not overwrite:
        raise RunDirError(
            f"{out}: exists and is not empty", fix="pass --overwrite or another --out"
        )
    refuse_untrained(run_dir, "merge")
    setup = RunSetup.from_run_dir(run_dir, full_precision_base=True)  # QLoRA: de-quantised base
    return merge(setup, out, tolerance, card_ref or str(out))
