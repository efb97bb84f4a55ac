"""Every name inside a run directory, in one place.

`run`, `eval`, `predict`, `merge`, `push`, `compare` and the checkpoints all find files through
these constants and `RunPaths`; nothing else spells a file name of the run directory, so the
layout can change in one module and two predicates can never disagree about what exists.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

RECIPE = "recipe.yaml"  # resolved recipe: revision pinned, versions in the header
RUN_INFO = "run.json"  # labels, family, method, parameter counts
METRICS = "metrics.json"
PREDICTIONS = "predictions.jsonl"
LOG = "log.jsonl"
CURVES = "curves.png"  # train loss, eval loss and the main metric against step, from log.jsonl
TRACKERS = "trackers"  # project directory of train.report_to trackers (TensorBoard event files)
CARD = "README.md"
TOKENIZER = "tokenizer"
CHECKPOINTS = "checkpoints"
FINISHED = ".finished"
MERGED_FROM = "merged_from.json"  # merge-adapters: the runs, weights and combination
LOCK = ".lock"

# inside a checkpoint
CHECKPOINT_PREFIX = "step-"
TRAINER_STATE = "trainer_state.json"  # written last: its presence marks a complete checkpoint
CORRUPT_PREFIX = "corrupt-"  # a checkpoint that failed verification, moved aside on --resume

# inside adapter/ for our own formats (peft writes the same names for its methods)
ADAPTER_WEIGHTS = "adapter_model.safetensors"
ADAPTER_CONFIG = "adapter_config.json"

# what makes a directory look like a run directory (refused without --overwrite / --resume)
RUN_MARKERS = (RECIPE, LOG, CHECKPOINTS, LOCK, FINISHED)


def checkpoint_name(step: int) -> str:
    return f"{CHECKPOINT_PREFIX}{step:08d}"


def is_complete_checkpoint(path: Path) -> bool:
    return path.name.startswith(CHECKPOINT_PREFIX) and (path / TRAINER_STATE).is_file()


def is_partial_checkpoint(path: Path) -> bool:
    """A checkpoint being written, parked or deleted (`.step-N.tmp-*`, `.tmp-step-N`,
    `.step-N.old`, `.step-N.deleting`): hidden names that are never resumed from."""
    return path.name.startswith(".") and CHECKPOINT_PREFIX in path.name


def complete_checkpoints(directory: Path) -> list[Path]:
    """Complete checkpoints, oldest first; half-written ones (no trainer state) are ignored."""
    if not directory.is_dir():
        return []
    return sorted(p for p in directory.iterdir() if is_complete_checkpoint(p))


@dataclass(frozen=True)
class RunPaths:
    """The files of one run directory."""

    root: Path

    @property
    def recipe(self) -> Path:
        return self.root / RECIPE

    @property
    def run_info(self) -> Path:
        return self.root / RUN_INFO

    @property
    def metrics(self) -> Path:
        return self.root / METRICS

    @property
    def predictions(self) -> Path:
        return self.root / PREDICTIONS

    @property
    def log(self) -> Path:
        return self.root / LOG

    @property
    def curves(self) -> Path:
        return self.root / CURVES

    @property
    def trackers(self) -> Path:
        return self.root / TRACKERS

    @property
    def card(self) -> Path:
        return self.root / CARD

    @property
    def tokenizer(self) -> Path:
        return self.root / TOKENIZER

    @property
    def checkpoints(self) -> Path:
        return self.root / CHECKPOINTS

    @property
    def finished(self) -> Path:
        return self.root / FINISHED

    @property
    def lock(self) -> Path:
        return self.root / LOCK

    @property
    def merged_from(self) -> Path:
        return self.root / MERGED_FROM

    def artifact(self, artifact_dir: str) -> Path:
        """adapter/ or model/, as the method's registry entry says."""
        return self.root / artifact_dir
