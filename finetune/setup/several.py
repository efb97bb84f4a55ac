"""Several finished runs for `predict RUN_A RUN_B ...`, on as few loaded base models as can be.

Runs of one base model whose method has a multi-adapter API (peft's `load_adapter` /
`set_adapter`) share one loaded base, each under its own adapter name; the others (our
bottleneck/BitFit formats, `full`) each load a base model of their own. Runs on different base
models or tasks are refused.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING

from finetune.errors import FinetuneError
from finetune.models.names import resolve_name
from finetune.run.layout import RunPaths
from finetune.setup.model import load_base_and_method, method_context
from finetune.setup.run_setup import OpenedRun, RunSetup, open_saved

if TYPE_CHECKING:  # pragma: no cover
    from finetune.types import Model

log = logging.getLogger(__name__)

ShareKey = tuple[str, int | None, tuple[str, ...], str]


def base_identity(run: OpenedRun) -> tuple[str, str | None, str]:
    """(model, revision, task): what runs must share to be compared on the same inputs."""
    model = run.recipe.model
    return (resolve_name(model.name).path, model.revision, run.recipe.task.type)


def _share_key(run: OpenedRun) -> ShareKey:
    """Runs with equal keys can sit on one loaded base: same method, head size, new modules and
    precision (predict stores a base's frozen weights in its run's autocast dtype)."""
    from finetune.setup.accelerator import inference_precision

    overrides = run.task.model_config_overrides()
    method, labels = run.method.name, overrides.get("num_labels")
    return (method, labels, tuple(run.saved.info.new_modules), inference_precision(run.recipe))


def check_same_base(runs: list[OpenedRun]) -> None:
    identities = {base_identity(run) for run in runs}
    if len(identities) > 1:
        shown = "; ".join(
            f"{run.saved.path} ({run.recipe.model.name}, {run.recipe.task.type})" for run in runs
        )
        raise FinetuneError(
            f"predict on several runs needs one base model and task; these differ: {shown}",
            fix="predict the runs of each base model and task in a separate command",
        )


def load_runs(paths: list[Path]) -> list[RunSetup]:
    """Every run, in the order given; peft adapters of one base share one loaded model."""
    opened = [open_saved(path) for path in paths]
    check_same_base(opened)
    groups: dict[ShareKey, list[int]] = {}
    for index, run in enumerate(opened):
        groups.setdefault(_share_key(run), []).append(index)
    loaded: dict[int, RunSetup] = {}
    for indices in groups.values():
        method = opened[indices[0]].method
        if len(indices) > 1 and method.multi_adapter:
            shared = _load_shared([opened[i] for i in indices])
            loaded.update(zip(indices, shared))
            continue
        for i in indices:
            if len(paths) > 1:
                log.info("%s: %s loads a base model of its own", paths[i], method.name)
            loaded[i] = RunSetup.from_run_dir(paths[i])
    return [loaded[i] for i in range(len(opened))]


def _load_shared(runs: list[OpenedRun]) -> list[RunSetup]:
    """One base model, one named adapter per run (peft's load_adapter / set_adapter)."""
    first = runs[0]
    parts = load_base_and_method(
        first.recipe, first.architecture, first.task, first.saved.info.new_modules
    )
    model: Model = parts.loaded.model  # each load_named returns the model with one more adapter
    names = [f"run{i}" for i in range(len(runs))]  # module keys: run paths may hold dots
    for run, name in zip(runs, names):
        ctx = method_context(run.recipe, run.architecture, run.task, run.saved.info.new_modules)
        artifact = RunPaths(run.saved.path).artifact(run.saved.info.artifact_dir)
        model = run.method.load_named(model, artifact, ctx, name)
    model.eval()
    log.info(
        "one base model, %d %s adapters: %s",
        len(runs),
        first.method.name,
        ", ".join(str(run.saved.path) for run in runs),
    )
    setups = []
    for run, name in zip(runs, names):
        run.saved.adapter = name
        setups.append(run.with_model(model, parts))
    return setups
