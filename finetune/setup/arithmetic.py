"""The runs of `finetune merge-adapters`, checked and loaded side by side on one base model.

Adapter arithmetic adds the runs' weight updates, which only means something for adapters of
one method on one base model for one task with one label set: every other case is refused
before a weight loads, the message naming each run and what it has. The factored combinations
(`linear`, `ties`, `dare_ties`) also need one rank across the runs.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Hashable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from finetune.errors import FinetuneError
from finetune.methods import METHODS
from finetune.run.layout import ADAPTER_CONFIG, RunPaths
from finetune.setup.model import BaseAndMethod, load_base_and_method, method_context
from finetune.setup.run_setup import OpenedRun, open_saved
from finetune.setup.several import base_identity

if TYPE_CHECKING:  # pragma: no cover
    from finetune.types import Model


@dataclass
class SideBySide:
    """The runs, opened, and one base model holding each run's adapter as run0, run1, ..."""

    runs: list[OpenedRun]
    model: Model
    names: list[str]
    parts: BaseAndMethod


def open_runs(paths: list[Path], how: str) -> list[OpenedRun]:
    """Every run opened (finished, readable), then refused unless they can be combined."""
    runs = [open_saved(path) for path in paths]
    _same(runs, "base model and task", lambda r: base_identity(r), _base_text)
    _same(runs, "method", lambda r: r.method.name, lambda r: r.method.name)
    method = runs[0].method
    if not method.arithmetic:
        able = ", ".join(n for n, m in METHODS.items() if m.arithmetic)
        raise FinetuneError(
            f"merge-adapters combines LoRA adapters with peft's add_weighted_adapter, and these "
            f"runs trained {method.name}: {_listing(runs, lambda r: r.method.name)}",
            fix=f"combine runs of {able}",
        )
    _same(runs, "labels", lambda r: tuple(r.saved.info.labels), lambda r: str(r.saved.info.labels))
    _same(runs, "new modules", lambda r: tuple(r.saved.info.new_modules), _new_modules_text)
    if how in ("linear", "ties", "dare_ties"):
        _same(runs, "LoRA rank", _rank, _rank, fix="use --how cat")
        if any("rank_pattern" in _rank(run) for run in runs):
            raise FinetuneError(
                f"--how {how} adds the runs' factors at one rank, and per-module ranks "
                f"(rank_pattern, e.g. EVA's) give factors of other shapes: {_listing(runs, _rank)}",
                fix="use --how cat",
            )
    return runs


def load_side_by_side(runs: list[OpenedRun]) -> SideBySide:
    """One base model (the first run's), one named adapter per run."""
    first = runs[0]
    parts = load_base_and_method(
        first.recipe, first.architecture, first.task, first.saved.info.new_modules
    )
    model: Model = parts.loaded.model
    names = [f"run{i}" for i in range(len(runs))]
    for run, name in zip(runs, names):
        ctx = method_context(run.recipe, run.architecture, run.task, run.saved.info.new_modules)
        artifact = RunPaths(run.saved.path).artifact(run.saved.info.artifact_dir)
        model = run.method.load_named(model, artifact, ctx, name)
    model.eval()
    return SideBySide(runs, model, names, parts)


def _same(
    runs: list[OpenedRun],
    what: str,
    key: Callable[[OpenedRun], Hashable],
    shown: Callable[[OpenedRun], object],
    fix: str = "",
) -> None:
    if len({key(run) for run in runs}) > 1:
        raise FinetuneError(
            f"merge-adapters needs runs of one {what}; these differ: {_listing(runs, shown)}",
            fix=fix or f"combine only runs that share their {what}",
        )


def _listing(runs: list[OpenedRun], shown: Callable[[OpenedRun], object]) -> str:
    return "; ".join(f"{run.saved.path}: {shown(run)}" for run in runs)


def _base_text(run: OpenedRun) -> str:
    model = run.recipe.model
    revision = f"@{model.revision}" if model.revision else ""
    return f"{model.name}{revision} ({run.recipe.task.type})"


def _new_modules_text(run: OpenedRun) -> str:
    return ", ".join(run.saved.info.new_modules) or "none"


def _rank(run: OpenedRun) -> str:
    """The adapter's rank as saved (PiSSA-style runs are saved at 2r), with its per-module
    ranks: the factored combinations add factors of equal shapes only."""
    path = RunPaths(run.saved.path).artifact(run.saved.info.artifact_dir) / ADAPTER_CONFIG
    config = json.loads(path.read_text(encoding="utf-8"))
    pattern = config.get("rank_pattern") or {}
    return f"r={config.get('r')}" + (f" rank_pattern={pattern}" if pattern else "")
