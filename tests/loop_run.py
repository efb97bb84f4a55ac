"""`fit` driven the way setup drives it: batches and the schedule built from the data, the
optimizer and the config, as `RunSetup.for_training` does (shared by the loop tests)."""

from __future__ import annotations

from pathlib import Path
from typing import Any


def run_fit(
    model: Any,
    optimizer: Any,
    dataset: Any,
    collate: Any,
    cfg: Any,
    accelerator: Any,
    hooks: Any,
    outputs: Any = None,
    resume_from: Path | None = None,
    causal: bool = False,
) -> Any:
    from finetune.train.batching import train_batches
    from finetune.train.loop import fit
    from finetune.train.optim import build_optimization

    batches = train_batches(dataset, collate, cfg, accelerator, causal)
    optimization = build_optimization(optimizer, cfg, len(batches.sampler))
    return fit(model, optimization, batches, cfg, accelerator, hooks, outputs, resume_from)
