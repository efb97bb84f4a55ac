"""Reloading a finished run for `eval`, `predict` and `merge`: everything is in the run dir."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from finetune.errors import RunDirError
from finetune.recipe.io import load_recipe
from finetune.recipe.schema import Recipe
from finetune.run.files import is_finished
from finetune.run.layout import RunPaths
from finetune.tasks import Task


@dataclass
class LoadedRun:
    path: Path
    recipe: Recipe
    info: dict[str, Any]
    task: Task
    model: Any


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


def load_run(path: Path) -> LoadedRun:
    """Base model + trained method + task with the labels it was trained with (run.json)."""
    from finetune.commands.build import load_base_and_method, make_task
    from finetune.models.architectures import architecture_named
    from finetune.models.loading import load_tokenizer
    from finetune.tasks.base import TaskState

    recipe, info = open_run(path)
    family = architecture_named(info["family"])
    task = make_task(recipe, family)
    task.state = TaskState.from_dict(info.get("task_state"))
    task.tokenizer = load_tokenizer(str(RunPaths(path).tokenizer))
    loaded, method, ctx = load_base_and_method(recipe, family, task, info.get("new_modules", []))
    model = method.load(loaded.model, RunPaths(path).artifact(info["artifact_dir"]), ctx)
    model.eval()
    return LoadedRun(path=path, recipe=recipe, info=info, task=task, model=model)
