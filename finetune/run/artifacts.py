"""What a run directory holds, written atomically by the main process.

recipe.yaml (resolved: revision pinned, library versions in the header), run.json (labels,
family, parameter counts: what `eval`/`predict` need without flags), tokenizer/, adapter/ or
model/, metrics.json, predictions.jsonl, classification_report.json (classification tasks),
log.jsonl, README.md (model card), .finished.
"""

from __future__ import annotations

import datetime as dt
import json
import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING

from finetune import __version__
from finetune.data.sources import LocalSource
from finetune.recipe.io import dump_recipe
from finetune.recipe.schema import DataConfig, Recipe
from finetune.run.card import render_model_card
from finetune.run.files import atomic_dir, atomic_write_json, atomic_write_text
from finetune.run.info import RunInfo
from finetune.run.layout import RunPaths

if TYPE_CHECKING:  # pragma: no cover
    from finetune.methods.base import Method
    from finetune.tasks import Example, Task
    from finetune.types import JSON, Model, StateDict, Tokenizer

LIBRARIES = ("torch", "transformers", "peft", "accelerate", "datasets", "tokenizers")


def library_versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    found = {"finetune": __version__}
    for name in LIBRARIES:
        try:
            found[name] = version(name)
        except PackageNotFoundError:
            continue
    return found


def resolved_recipe_text(recipe: Recipe, versions: dict[str, str]) -> str:
    header = "# Resolved recipe written by finetune; rerun with: finetune run <this file>\n"
    header += "# versions: " + ", ".join(f"{k} {v}" for k, v in versions.items()) + "\n"
    return header + dump_recipe(recipe)


def absolute_sources(data: DataConfig, base_dir: Path | None) -> None:
    """Local data paths resolved as the run reads them, so a recipe written elsewhere (the run
    directory's recipe.yaml, compare's per-method recipes) finds the same files."""
    from finetune.data.readers import resolve_path

    for split in ("train", "eval", "test"):
        source = getattr(data, split)
        if isinstance(source, LocalSource):
            source.path = str(resolve_path(source.path, base_dir).resolve())


def write_run_start(
    out: Path,
    recipe: Recipe,
    info: RunInfo,
    tokenizer: Tokenizer,
    revision: str | None,
    resume: bool,
    base_dir: Path | None = None,
) -> None:
    """Everything known before training: a crash later still leaves a readable run dir."""
    out.mkdir(parents=True, exist_ok=True)
    pinned = recipe.model_copy(deep=True)
    if revision and not Path(recipe.model.name).exists() and ":" not in recipe.model.name:
        pinned.model.revision = revision
    absolute_sources(pinned.data, base_dir)
    paths = RunPaths(out)
    atomic_write_text(paths.recipe, resolved_recipe_text(pinned, info.versions))
    info.write(paths.run_info)
    if not resume or not paths.tokenizer.exists():
        with atomic_dir(paths.tokenizer) as tmp:
            tokenizer.save_pretrained(str(tmp))


def write_predictions(
    path: Path, task: Task, predictions: list[object] | None, examples: list[Example]
) -> None:
    """One JSON line per example, in example order (what `run` and `eval` both write); a
    prediction is whatever the task's `eval_batch` made, read back by its `prediction_record`."""
    lines = [
        json.dumps(task.prediction_record(p, e), ensure_ascii=False)
        for p, e in zip(predictions or [], examples)
    ]
    atomic_write_text(path, "\n".join(lines) + "\n")


def directory_size(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def write_report(
    out: Path, task: Task, predictions: list[object], examples: list[Example], suffix: str = ""
) -> None:
    """The task's detailed report (classification: per-class scores, confusion matrix)."""
    report = task.report(predictions, examples)
    if report is not None and task.report_name:
        name = Path(task.report_name)
        atomic_write_json(out / f"{name.stem}{suffix}{name.suffix}", report)


def save_weights(
    paths: RunPaths, method: Method, model: Model, state_dict: StateDict | None
) -> int:
    """The method's artefact (adapter/ or model/), written atomically; its size in bytes."""
    with atomic_dir(paths.artifact(method.artifact_dir)) as tmp:
        method.save(model, tmp, state_dict)
        if not any(tmp.glob("*.safetensors")) and not any(tmp.glob("*.bin")):
            from finetune.errors import CheckpointError

            raise CheckpointError(
                f"method {method.name} saved no weights to {tmp}",
                fix="this is a bug; please report it",
            )
    return directory_size(paths.artifact(method.artifact_dir))


def save_run_artifacts(
    out: Path,
    recipe: Recipe,
    task: Task,
    method: Method,
    model: Model,
    metrics: Mapping[str, JSON],
    predictions: list[object] | None,
    eval_examples: list[Example] | None,
    state_dict: StateDict | None = None,
) -> None:
    """The trained weights (none for a method that trains nothing), metrics, predictions and
    card; `.finished` last."""
    paths = RunPaths(out)
    size = save_weights(paths, method, model, state_dict) if method.trains else 0
    info = RunInfo.read(paths.run_info)
    metrics = {
        **metrics,  # the run's, then what saving measured
        "artifact_bytes": size,
        "trainable_parameters": info.parameters.trainable,
        "total_parameters": info.parameters.total,
    }
    if predictions is not None and eval_examples is not None:
        write_predictions(paths.predictions, task, predictions, eval_examples)
        write_report(out, task, predictions, eval_examples)
    atomic_write_json(paths.metrics, metrics)
    card = render_model_card(recipe, info, method, metrics, "run", str(out))
    atomic_write_text(paths.card, card)
    atomic_write_text(paths.finished, dt.datetime.now(dt.timezone.utc).isoformat() + "\n")
    # checkpoints exist to resume an unfinished run; a finished one needs none of them
    shutil.rmtree(paths.checkpoints, ignore_errors=True)
