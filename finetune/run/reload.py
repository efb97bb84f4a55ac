"""Reloading a finished run for `eval`, `predict` and `merge`: everything is in the run dir.

`load_runs` reloads several runs for `predict RUN_A RUN_B ...`: runs of one base model whose
method has a multi-adapter API (peft's `load_adapter` / `set_adapter`) share one loaded base,
each under its own adapter name; the others (our bottleneck/BitFit formats, `full`) each load a
base model of their own. Runs on different base models or tasks are refused.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from finetune.errors import FinetuneError, RunDirError
from finetune.methods import METHODS
from finetune.recipe.io import load_recipe
from finetune.recipe.schema import Recipe
from finetune.run.files import is_finished
from finetune.run.layout import RunPaths
from finetune.tasks import Task

log = logging.getLogger(__name__)


@dataclass
class LoadedRun:
    path: Path
    recipe: Recipe
    info: dict[str, Any]
    task: Task
    model: Any
    adapter: str | None = None  # its adapter's name on a base shared with other runs

    def activate(self) -> None:
        """Switch a shared base to this run's adapter (a no-op for a run loaded alone)."""
        if self.adapter is not None:
            METHODS[self.info["method"]].activate(self.model, self.adapter)


@dataclass
class OpenedRun:
    """A run directory read (recipe, run.json, task with its labels), weights not loaded."""

    path: Path
    recipe: Recipe
    info: dict[str, Any]
    task: Task


def open_run(path: Path) -> tuple[Recipe, dict[str, Any]]:
    if not path.is_dir():
        raise RunDirError(f"{path}: no such run directory", fix="pass a directory made by `run`")
    paths = RunPaths(path)
    if not paths.run_info.exists() or not paths.recipe.exists():
        raise RunDirError(
            f"{path}: not a finetune run directory (no run.json/recipe.yaml)",
            fix="pass the output.dir of a finished `finetune run`",
        )
    if not is_finished(path):
        raise RunDirError(
            f"{path}: the run did not finish (no adapter saved yet)",
            fix="finish it with `finetune run <recipe> --resume`",
        )
    return load_recipe(paths.recipe), json.loads(paths.run_info.read_text())


def open_with_task(path: Path, full_precision_base: bool = False) -> OpenedRun:
    """The run's task with the labels it was trained with (run.json) and its tokenizer.

    `full_precision_base` (merge): a QLoRA run's adapter goes onto the base in full precision
    instead of k-bit, because folding LoRA into 4-bit integers would round the update away;
    the merged model is then an ordinary full-precision model."""
    from finetune.commands.build import make_task
    from finetune.models.detect import architecture_named
    from finetune.models.loading import load_tokenizer
    from finetune.tasks.base import TaskState

    recipe, info = open_run(path)
    if full_precision_base and recipe.model.quantization is not None:
        log.info(
            "this run trained on a %d-bit base: merging into the de-quantised (full-precision) "
            "base weights; the merged model is full precision and may differ slightly from the "
            "quantised run's outputs",
            recipe.model.quantization.bits,
        )
        model_section = recipe.model.model_copy(update={"quantization": None})
        recipe = recipe.model_copy(update={"model": model_section})
    task = make_task(recipe, architecture_named(info["family"]))
    task.state = TaskState.from_dict(info.get("task_state"))
    task.tokenizer = load_tokenizer(str(RunPaths(path).tokenizer))
    return OpenedRun(path, recipe, info, task)


def _base_and_context(run: OpenedRun) -> tuple[Any, Any, Any]:
    from finetune.commands.build import load_base_and_method
    from finetune.models.detect import architecture_named

    family = architecture_named(run.info["family"])
    return load_base_and_method(run.recipe, family, run.task, run.info.get("new_modules", []))


def load_run(path: Path, full_precision_base: bool = False) -> LoadedRun:
    """Base model + trained method + task with the labels it was trained with (run.json)."""
    return _load_alone(open_with_task(path, full_precision_base))


def _load_alone(run: OpenedRun) -> LoadedRun:
    loaded, method, ctx = _base_and_context(run)
    model = method.load(loaded.model, RunPaths(run.path).artifact(run.info["artifact_dir"]), ctx)
    model.eval()
    return LoadedRun(path=run.path, recipe=run.recipe, info=run.info, task=run.task, model=model)


# --------------------------------------------------------------------------- several runs


def base_identity(run: OpenedRun) -> tuple[str, str | None, str]:
    """(model, revision, task): what runs must share to be compared on the same inputs."""
    from finetune.models.names import resolve_name

    model = run.recipe.model
    return (resolve_name(model.name).path, model.revision, run.recipe.task.type)


def _share_key(run: OpenedRun) -> tuple[Any, ...]:
    """Runs with equal keys can sit on one loaded base: same method, head size, new modules."""
    overrides = run.task.model_config_overrides()
    return (
        run.info["method"],
        overrides.get("num_labels"),
        tuple(run.info.get("new_modules", [])),
    )


def check_same_base(runs: list[OpenedRun]) -> None:
    identities = {base_identity(run) for run in runs}
    if len(identities) > 1:
        shown = "; ".join(
            f"{run.path} ({run.recipe.model.name}, {run.recipe.task.type})" for run in runs
        )
        raise FinetuneError(
            f"predict on several runs needs one base model and task; these differ: {shown}",
            fix="predict the runs of each base model and task in a separate command",
        )


def load_runs(paths: list[Path]) -> list[LoadedRun]:
    """Every run, in the order given; peft adapters of one base share one loaded model."""
    opened = [open_with_task(path) for path in paths]
    check_same_base(opened)
    groups: dict[tuple[Any, ...], list[int]] = {}
    for index, run in enumerate(opened):
        groups.setdefault(_share_key(run), []).append(index)
    loaded: dict[int, LoadedRun] = {}
    for indices in groups.values():
        method = METHODS[opened[indices[0]].info["method"]]
        if len(indices) > 1 and method.multi_adapter:
            shared = _load_shared([opened[i] for i in indices])
            loaded.update(zip(indices, shared))
            continue
        for i in indices:
            if len(paths) > 1:
                log.info("%s: %s loads a base model of its own", opened[i].path, method.name)
            loaded[i] = _load_alone(opened[i])
    return [loaded[i] for i in range(len(opened))]


def _load_shared(runs: list[OpenedRun]) -> list[LoadedRun]:
    """One base model, one named adapter per run (peft's load_adapter / set_adapter)."""
    from finetune.commands.build import method_context
    from finetune.models.detect import architecture_named

    loaded, method, _ = _base_and_context(runs[0])
    model = loaded.model
    names = [f"run{i}" for i in range(len(runs))]  # module keys: run paths may hold dots
    for run, name in zip(runs, names):
        family = architecture_named(run.info["family"])
        ctx = method_context(run.recipe, family, run.task, run.info.get("new_modules", []))
        artifact = RunPaths(run.path).artifact(run.info["artifact_dir"])
        model = method.load_named(model, artifact, ctx, name)
    model.eval()
    log.info(
        "one base model, %d %s adapters: %s",
        len(runs),
        method.name,
        ", ".join(str(run.path) for run in runs),
    )
    return [
        LoadedRun(run.path, run.recipe, run.info, run.task, model, adapter=name)
        for run, name in zip(runs, names)
    ]
