"""`finetune merge-adapters`: the runs' adapters combined into one (the method's `combine`,
peft's add_weighted_adapter for LoRA), written as a normal run directory.

The new directory is the first run's, with the combined adapter: its recipe.yaml and
tokenizer, a run.json with the combined adapter's parameter counts, `merged_from.json` (the
runs, weights and combination), a model card and `.finished`, so `eval`, `predict`, `merge`
and `push` take it like any run. When the recipe has eval data, the combined adapter is then
evaluated on it (eval_eval.json) and those metrics are the run's metrics.json.
"""

from __future__ import annotations

import datetime as dt
import logging
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from finetune.errors import FinetuneError
from finetune.methods.guards import check_saved_adapter
from finetune.methods.wrapped import peft_model
from finetune.pipeline.inference import evaluate
from finetune.run.artifacts import directory_size
from finetune.run.card import render_model_card
from finetune.run.files import atomic_dir, atomic_write_json, atomic_write_text
from finetune.run.info import ParameterCounts, RunInfo
from finetune.run.layout import RunPaths
from finetune.setup.data import saved_split
from finetune.setup.run_setup import RunSetup

if TYPE_CHECKING:  # pragma: no cover
    from finetune.setup.arithmetic import SideBySide
    from finetune.types import JSONObject

log = logging.getLogger(__name__)

COMBINED = "default"  # the adapter name `Method.combine` adds


@dataclass
class CombinedRun:
    out: Path
    rank: int
    metrics: JSONObject = field(default_factory=dict)


def merge_adapters(
    side: SideBySide, weights: list[float], how: str, density: float, out: Path
) -> CombinedRun:
    first = side.runs[0]
    rank = first.method.combine(side.model, side.names, weights, how, density)
    log.info("combined %d adapters (%s, weights %s): rank %d", len(side.names), how, weights, rank)
    info = _info(side)
    with atomic_dir(out) as tmp:
        paths, source = RunPaths(tmp), RunPaths(first.saved.path)
        adapter = paths.artifact(info.artifact_dir)
        peft_model(side.model).save_pretrained(str(adapter), selected_adapters=[COMBINED])
        check_saved_adapter(adapter, first.method.name)
        shutil.copy2(source.recipe, paths.recipe)
        shutil.copytree(source.tokenizer, paths.tokenizer)
        info.write(paths.run_info)
        provenance: JSONObject = {
            "runs": [str(run.saved.path) for run in side.runs],
            "weights": weights,
            "how": how,
            "density": density if how in ("ties", "dare_ties") else None,
            "rank": rank,
        }
        atomic_write_json(paths.merged_from, provenance)
        _finish(tmp, info, {})
    return CombinedRun(out, rank, _evaluate(out, info))


def _info(side: SideBySide) -> RunInfo:
    """The first run's run.json with the combined adapter's parameter counts."""
    others = [f".{name}." for name in side.names]
    trainable = total = 0
    for name, param in side.model.named_parameters():
        if any(tag in name for tag in others):
            continue
        total += param.numel()
        trainable += param.numel() if f".{COMBINED}." in name else 0
    first = side.runs[0].saved.info
    return first.model_copy(
        update={
            "parameters": ParameterCounts(trainable=trainable, total=total),
            "lr": None,
            "created": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        }
    )


def _finish(out: Path, info: RunInfo, metrics: JSONObject) -> None:
    """metrics.json, the model card and `.finished` (written last)."""
    from finetune.methods import METHODS
    from finetune.recipe.io import load_recipe

    paths = RunPaths(out)
    metrics = {
        **metrics,
        "artifact_bytes": directory_size(paths.artifact(info.artifact_dir)),
        "trainable_parameters": info.parameters.trainable,
        "total_parameters": info.parameters.total,
    }
    atomic_write_json(paths.metrics, metrics)
    recipe = load_recipe(paths.recipe)
    card = render_model_card(recipe, info, METHODS[info.method], metrics, "run", str(out))
    atomic_write_text(paths.card, card)
    atomic_write_text(paths.finished, dt.datetime.now(dt.timezone.utc).isoformat() + "\n")


def _evaluate(out: Path, info: RunInfo) -> JSONObject:
    """The combined run on its recipe's eval split, reloaded as `eval` would; {} without one."""
    setup = RunSetup.from_run_dir(out)
    try:
        examples = saved_split(setup.task, setup.recipe, "eval", None)
    except FinetuneError as exc:
        log.info("no evaluation of the combined adapter: %s", exc.message)
        return {}
    metrics = evaluate(setup, examples, "eval")
    _finish(out, info, metrics)
    return metrics
