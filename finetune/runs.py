"""Reloading a finished run for `eval` and `predict`: no flags, everything is in the run dir."""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from finetune.batching import ListDataset
from finetune.data import read_source
from finetune.errors import FinetuneError, RunDirError
from finetune.evaluation import make_eval_loader, run_eval
from finetune.modeling import load_tokenizer
from finetune.models import FAMILIES
from finetune.recipe import LocalSource, Recipe
from finetune.recipe_io import load_recipe
from finetune.rundir import atomic_write_json, atomic_write_text, is_finished
from finetune.session import load_base_and_method, load_split, make_task
from finetune.tasks import Example, Task
from finetune.tasks.base import TaskState

log = logging.getLogger(__name__)


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
    if not (path / "run.json").exists() or not (path / "recipe.yaml").exists():
        raise RunDirError(
            f"{path}: not a finetune run directory (no run.json/recipe.yaml)",
            fix="pass the output.dir of a finished `finetune run`",
        )
    if not is_finished(path):
        raise RunDirError(
            f"{path}: the run did not finish (no adapter saved yet)",
            fix="finish it with `finetune run <recipe> --resume`",
        )
    return load_recipe(path / "recipe.yaml"), json.loads((path / "run.json").read_text())


def load_run(path: Path) -> LoadedRun:
    recipe, info = open_run(path)
    family = FAMILIES[info["family"]]
    task = make_task(recipe, family)
    task.state = TaskState.from_dict(info.get("task_state"))
    task.tokenizer = load_tokenizer(str(path / "tokenizer"))
    loaded, method, ctx = load_base_and_method(recipe, family, task, info.get("new_modules", []))
    model = method.load(loaded.model, path / info["artifact_dir"], ctx)
    model.eval()
    return LoadedRun(path=path, recipe=recipe, info=info, task=task, model=model)


def evaluate_run(path: Path, split: str = "eval", data: str | None = None) -> dict[str, Any]:
    """Metrics of a saved run on its eval/test split or another file; writes eval_<name>.json."""
    run = load_run(path)
    examples = _examples_for(run, split, data)
    dataset = ListDataset(run.task.encode(examples, training=False))
    accelerator = inference_accelerator()
    model = accelerator.prepare_model(run.model, evaluation_mode=True)
    loader = make_eval_loader(dataset, run.task, run.recipe.eval.batch_size, accelerator)
    metrics, predictions = run_eval(model, run.task, loader, examples, accelerator)
    name = Path(data).stem if data else split
    if accelerator.is_main_process:
        atomic_write_json(path / f"eval_{name}.json", metrics)
        lines = [
            json.dumps(run.task.prediction_record(p, e), ensure_ascii=False)
            for p, e in zip(predictions or [], examples)
        ]
        atomic_write_text(path / f"predictions_{name}.jsonl", "\n".join(lines) + "\n")
    return metrics


def _examples_for(run: LoadedRun, split: str, data: str | None) -> list[Example]:
    if data:
        table = read_source(LocalSource(path=data), None, None, run.task.languages(run.recipe))
        examples = run.task.examples(table, "eval")
    else:
        if split not in ("eval", "test", "train"):
            raise FinetuneError(f"--split {split}: unknown split", fix="use eval, test or train")
        if getattr(run.recipe.data, split) is None:
            if split == "eval" and run.recipe.data.eval_fraction:
                from finetune.session import load_splits

                held = load_splits(run.task, run.recipe, None).eval
                return held or []
            raise FinetuneError(
                f"the run's recipe has no data.{split}",
                fix="pass --data FILE to evaluate on a file",
            )
        examples = load_split(run.task, run.recipe, split, None) or []
        if split != "train" and run.recipe.data.max_eval_samples:
            examples = examples[: run.recipe.data.max_eval_samples]
    for example in examples:
        run.task.check_example(example)
    return examples


def predict_texts(path: Path, texts: list[str]) -> list[dict[str, Any]]:
    """Predictions on the device `eval` uses (the GPU when there is one)."""
    import torch
    from accelerate.utils import send_to_device

    run = load_run(path)
    examples = run.task.examples_from_texts(texts)
    features = run.task.encode(examples, training=False)
    accelerator = inference_accelerator()
    model = accelerator.prepare_model(run.model, evaluation_mode=True)
    records = []
    batch_size = run.recipe.eval.batch_size
    with torch.inference_mode():
        for start in range(0, len(features), batch_size):
            chunk = features[start : start + batch_size]
            batch = send_to_device(run.task.collate(chunk), accelerator.device)
            _, preds = run.task.eval_batch(model, batch, predict=True)
            for feat, pred in zip(chunk, preds or []):
                records.append(run.task.prediction_record(pred, examples[feat["idx"]]))
    return records


def inference_accelerator() -> Any:
    """The one device choice of `eval` and `predict`: the GPU when there is one, else CPU."""
    import accelerate

    return accelerate.Accelerator(cpu=not _cuda())


def _cuda() -> bool:
    import torch

    return torch.cuda.is_available()
