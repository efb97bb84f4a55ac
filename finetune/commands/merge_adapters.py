"""`finetune merge-adapters RUN_A RUN_B ... --out RUN_DIR`: LoRA runs of one base model
combined into a new run directory (finetune/pipeline/adapter_arithmetic.py)."""

from __future__ import annotations

from pathlib import Path

from finetune.errors import FinetuneError, RunDirError
from finetune.methods.arithmetic import HOWS
from finetune.pipeline.adapter_arithmetic import CombinedRun, merge_adapters
from finetune.setup.arithmetic import load_side_by_side, open_runs


def parse_weights(text: str | None, count: int) -> list[float]:
    """One weight per run (`0.5,0.5`); none given: equal weights summing to 1."""
    if text is None:
        return [1.0 / count] * count
    try:
        weights = [float(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise FinetuneError(
            f"--weights {text}: not a comma-separated list of numbers", fix="e.g. --weights 0.5,0.5"
        ) from None
    if len(weights) != count:
        raise FinetuneError(
            f"--weights {text}: {len(weights)} weights for {count} runs",
            fix="give one weight per run, in the order of the runs",
        )
    return weights


def merge_adapter_runs(
    paths: list[Path],
    out: Path,
    weights: str | None = None,
    how: str = "linear",
    density: float = 0.2,
    overwrite: bool = False,
) -> CombinedRun:
    if how not in HOWS:
        raise FinetuneError(f"--how {how}: unknown combination", fix="use " + ", ".join(HOWS))
    if len(paths) < 2:
        raise FinetuneError("merge-adapters needs at least two runs", fix="name two or more runs")
    if not 0 < density <= 1:
        raise FinetuneError(f"--density {density}: must be in (0, 1]", fix="e.g. --density 0.2")
    if out.exists() and any(out.iterdir()) and not overwrite:
        raise RunDirError(
            f"{out}: exists and is not empty", fix="pass --overwrite or another --out"
        )
    chosen = parse_weights(weights, len(paths))
    side = load_side_by_side(open_runs(paths, how))
    return merge_adapters(side, chosen, how, density, out)
