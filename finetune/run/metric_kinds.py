"""Which metrics.json entries describe the model's quality and which describe the run.

The card's evaluation table and model-index hold quality only; timings, sizes, counts and
training settings go to a separate table (and never into the Hub's evaluation results).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import TYPE_CHECKING, TypeGuard

if TYPE_CHECKING:  # pragma: no cover
    from finetune.types import JSON

# metrics.json entries that describe the run (time, size, counts), not the model's quality
FACT_KEYS = frozenset(
    {
        "samples",
        "steps",
        "epoch",
        "gen_len_words",
        "effective_batch",
        "num_processes",
        "mixed_precision",
        "distributed_type",
    }
)
FACT_PREFIXES = ("train_", "best_", "peak_", "select_", "stopped_")  # training, not the model
FACT_SUFFIXES = ("_seconds", "_per_s", "_bytes", "_parameters")
# quality metrics the model-index leaves out: the eval loss depends on the tokenizer and the task
# head and is no metric the Hub's evaluation tables compare
NOT_IN_MODEL_INDEX = frozenset({"loss"})


def is_run_fact(key: str) -> bool:
    """Whether a metrics.json key describes the run (timings, sizes, counts), not quality."""
    return key in FACT_KEYS or key.startswith(FACT_PREFIXES) or key.endswith(FACT_SUFFIXES)


def is_number(value: object) -> TypeGuard[float]:
    """An int or a float that is not NaN (bool is no number here)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return False
    return not (isinstance(value, float) and math.isnan(value))


def split_metrics(
    metrics: Mapping[str, JSON],
) -> tuple[dict[str, float | str], dict[str, float | str]]:
    """(quality metrics, run facts): numeric entries only; strings (signatures) go with quality."""
    quality: dict[str, float | str] = {}
    facts: dict[str, float | str] = {}
    for key, value in metrics.items():
        if not (is_number(value) or isinstance(value, str)):
            continue  # histories, reports: they live in metrics.json, not in a table
        (facts if is_run_fact(key) else quality)[key] = value
    return quality, facts


# how the card's table of run facts names the metrics.json keys it shows
FACT_NAMES = {
    "train_loss": "final training loss",
    "train_seconds": "training time (s)",
    "train_samples_per_s": "training throughput (examples/s)",
    "peak_memory_bytes": "peak memory (bytes)",
    "steps": "optimizer steps",
    "samples": "evaluation examples",
    "artifact_bytes": "saved weights (bytes)",
    "eval_seconds": "evaluation time (s)",
    "trainable_parameters": "trainable parameters",
    "total_parameters": "total parameters",
    "best_step": "step of the kept weights",
    "gen_len_words": "mean generated length (words)",
}
