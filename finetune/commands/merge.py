"""`finetune merge`: fold the adapter into the base weights, checked against the adapter's
outputs on real inputs (finetune/pipeline/merging.py), into a plain transformers model."""

from __future__ import annotations

from pathlib import Path

from finetune.errors import RunDirError
from finetune.pipeline.merging import MergeResult, merge
from finetune.setup.run_setup import RunSetup


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
    setup = RunSetup.from_run_dir(run_dir, full_precision_base=True)  # QLoRA: de-quantised base
    return merge(setup, out, tolerance, card_ref or str(out))
