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
from pathlib import Path
from typing import TYPE_CHECKING, Any

from finetune import __version__
from finetune.data.sources import LocalSource
from finetune.recipe.io import dump_recipe
from finetune.recipe.schema import DataConfig, Recipe
from finetune.run.card import render_model_card
from finetune.run.files import atomic_dir, atomic_write_json, atomic_write_text
from finetune.run.layout import RunPaths
from finetune.tasks.main_metric import main_metric

if TYPE_CHECKING:  # pragma: no cover
    from finetune.tasks import Example, Task

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
    out, recipe, task, family, loaded, method, trainable, total, resume, base_dir=None
) -> None:
    """Everything known before training: a crash later still leaves a readable run dir."""
    out.mkdir(parents=True, exist_ok=True)
    pinned = recipe.model_copy(deep=True)
    if loaded.revision and not Path(recipe.model.name).exists() and ":" not in recipe.model.name:
        pinned.model.revision = loaded.revision
    absolute_sources(pinned.data, base_dir)
    versions = library_versions()
    paths = RunPaths(out)
    atomic_write_text(paths.recipe, resolved_recipe_text(pinned, versions))
    info = {
        "finetune_version": __version__,
        "created": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "versions": versions,
        "family": family.name,
        "task": recipe.task.type,
        "model_kind": task.model_kind(),
        "main_metric": main_metric(recipe),  # task.metric or the task's default: what ranks it
        "method": method.name,
        "lr": recipe.train.lr,  # resolved: the method's default_lr when the recipe left it null
        "artifact_dir": method.artifact_dir,
        "new_modules": loaded.new_modules,
        "task_state": task.state.to_dict(),
        "parameters": {"trainable": trainable, "total": total},
    }
    atomic_write_json(paths.run_info, info)
    if not resume or not paths.tokenizer.exists():
        with atomic_dir(paths.tokenizer) as tmp:
            task.tokenizer.save_pretrained(str(tmp))


def write_predictions(path: Path, task: Any, predictions: Any, examples: list[Any]) -> None:
    """One JSON line per example, in example order (what `run` and `eval` both write)."""
    lines = [
        json.dumps(task.prediction_record(p, e), ensure_ascii=False)
        for p, e in zip(predictions or [], examples)
    ]
    atomic_write_text(path, "\n".join(lines) + "\n")


def directory_size(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def write_report(
    out: Path, task: Task, predictions: list[Any], examples: list[Example], suffix: str = ""
) -> None:
    """The task's detailed report (classification: per-class scores, confusion matrix)."""
    report = task.report(predictions, examples)
    if report is not None and task.report_name:
        name = Path(task.report_name)
        atomic_write_json(out / f"{name.stem}{suffix}{name.suffix}", report)


def save_run_artifacts(
    out,
    recipe,
    task,
    method,
    model,
    metrics,
    predictions,
    eval_examples,
    trainable,
    total,
    state_dict=None,
) -> None:
    paths = RunPaths(out)
    with atomic_dir(paths.artifact(method.artifact_dir)) as tmp:
        method.save(model, tmp, state_dict)
        if not any(tmp.glob("*.safetensors")) and not any(tmp.glob("*.bin")):
            from finetune.errors import CheckpointError

            raise CheckpointError(
                f"method {method.name} saved no weights to {tmp}",
                fix="this is a bug; please report it",
            )
    size = directory_size(paths.artifact(method.artifact_dir))
    metrics = {
        **metrics,
        "artifact_bytes": size,
        "trainable_parameters": trainable,
        "total_parameters": total,
    }
    if predictions is not None and eval_examples is not None:
        write_predictions(paths.predictions, task, predictions, eval_examples)
        write_report(out, task, predictions, eval_examples)
    atomic_write_json(paths.metrics, metrics)
    info = json.loads(paths.run_info.read_text())
    atomic_write_text(paths.card, render_model_card(recipe, info, metrics, "run", str(out)))
    atomic_write_text(paths.finished, dt.datetime.now(dt.timezone.utc).isoformat() + "\n")
    # checkpoints exist to resume an unfinished run; a finished one needs none of them
    shutil.rmtree(paths.checkpoints, ignore_errors=True)
