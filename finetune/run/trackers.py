"""Experiment trackers (`train.report_to`) through Accelerate's own tracker classes.

No logging client of our own: `make_accelerator` passes `log_with` and a project directory
under the run directory, `run` calls `init_trackers` once with the recipe as flat
hyperparameters and `end_training` at the end, and the loop and the evaluations call
`accelerator.log` with the same numbers they write to log.jsonl. Accelerate drops a tracker
whose package is missing with only a debug message, so `validate` checks the packages first.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, TypedDict

from finetune.errors import Problem
from finetune.run.curves import step_of
from finetune.run.layout import RunPaths

if TYPE_CHECKING:  # pragma: no cover
    from finetune.recipe.schema import Recipe
    from finetune.types import JSON, Accelerator

# tracker name -> (module Accelerate imports, pip package that provides it)
PACKAGES: dict[str, tuple[str, str]] = {
    "tensorboard": ("tensorboard", "tensorboard"),
    "mlflow": ("mlflow", "mlflow"),
    "wandb": ("wandb", "wandb"),
    "comet_ml": ("comet_ml", "comet-ml"),
    "aim": ("aim", "aim"),
    "clearml": ("clearml", "clearml"),
    "dvclive": ("dvclive", "dvclive"),
    "swanlab": ("swanlab", "swanlab"),
    "trackio": ("trackio", "trackio"),
}
SKIPPED = ("samples", "step", "epoch")  # counters, not curves


def check_trackers(recipe: Recipe, where: str) -> list[Problem]:
    """A named tracker whose package is not importable (found without importing it)."""
    problems = []
    for name in recipe.train.report_to:
        module, package = PACKAGES[name]
        if importlib.util.find_spec(module) is None:
            problems.append(
                Problem(
                    f"{where}: train.report_to",
                    f"tracker {name} needs the {package} package, which is not installed",
                    f"pip install {package}, or remove {name} from train.report_to",
                )
            )
    return problems


class TrackerKwargs(TypedDict, total=False):
    """The `Accelerator(...)` arguments that turn trackers on."""

    log_with: list[str]
    project_dir: str


def accelerator_kwargs(recipe: Recipe, run_dir: Path | None) -> TrackerKwargs:
    """`log_with` and `project_dir` for `Accelerator(...)`; nothing when no tracker is asked."""
    if not recipe.train.report_to or run_dir is None:
        return {}
    trackers = RunPaths(run_dir).trackers
    return {"log_with": list(recipe.train.report_to), "project_dir": str(trackers)}


def start_trackers(accelerator: Accelerator, recipe: Recipe, run_dir: Path) -> None:
    """`init_trackers` with the recipe as hyperparameters (logged once); the project is named
    after the run directory (TensorBoard writes to <run>/trackers/<run name>/)."""
    if recipe.train.report_to:
        accelerator.init_trackers(run_dir.resolve().name, config=hyperparameters(recipe))


def finish_trackers(accelerator: Accelerator, recipe: Recipe) -> None:
    """`end_training` closes the trackers (flushes TensorBoard, ends the MLflow run). It also
    destroys the process group, so a run without trackers does not call it: the process
    group's lifetime stays the launcher's, as before trackers existed."""
    if recipe.train.report_to:
        accelerator.end_training()


def hyperparameters(recipe: Recipe) -> dict[str, bool | int | float | str]:
    """The recipe as flat `section.key` scalars: what TensorBoard's hparams and MLflow's params
    accept (None and lists become text)."""
    flat: dict[str, bool | int | float | str] = {}

    def walk(prefix: str, value: JSON) -> None:
        if isinstance(value, dict):
            for key, inner in value.items():
                walk(f"{prefix}.{key}" if prefix else str(key), inner)
        elif isinstance(value, (bool, int, float, str)):
            flat[prefix] = value
        else:
            flat[prefix] = str(value)

    walk("", recipe.model_dump(mode="json"))
    return flat


def scalars(record: Mapping[str, JSON]) -> dict[str, float]:
    """A log.jsonl record as tracker scalars: train/<key> for a training step, eval/<metric>
    for an evaluation (eval_* keys); counters and missing values left out."""
    out: dict[str, float] = {}
    for key, value in record.items():
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            continue
        if key.startswith("eval_"):
            name = key.removeprefix("eval_")
            if name not in SKIPPED:
                out[f"eval/{name}"] = float(value)
        elif key not in SKIPPED:
            out[f"train/{key}"] = float(value)
    return out


def log_record(accelerator: Accelerator, record: Mapping[str, JSON]) -> None:
    """Send one log.jsonl record to the trackers (a no-op without trackers, and on every
    process but the main one, as Accelerate does)."""
    if getattr(accelerator, "trackers", None):
        accelerator.log(scalars(record), step=step_of(record))
