"""Building the pieces a run needs, shared by `run`, `eval` and `predict`.

Data loading (with row-precise errors) happens before any weight loads; the model is built
from the family table, the task's head and the method, in that order.
"""

from __future__ import annotations

import logging
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from finetune.data.readers import read_source
from finetune.errors import DataError, FinetuneError
from finetune.methods import METHODS, Method, MethodContext
from finetune.models.architectures import Family, resolve_name
from finetune.recipe.schema import Recipe
from finetune.tasks import TASKS, Example, Task

log = logging.getLogger(__name__)


@dataclass
class Splits:
    train: list[Example]
    eval: list[Example] | None
    test: list[Example] | None


def make_task(recipe: Recipe, family: Family) -> Task:
    return TASKS[recipe.task.type](recipe, family)


def load_split(
    task: Task, recipe: Recipe, split: str, base_dir: Path | None
) -> list[Example] | None:
    source = getattr(recipe.data, split)
    if source is None:
        return None
    limit = recipe.data.max_train_samples if split == "train" else recipe.data.max_eval_samples
    table = read_source(source, base_dir, limit, task.languages(recipe), recipe.train.seed)
    return task.examples(table, split)


def load_splits(task: Task, recipe: Recipe, base_dir: Path | None) -> Splits:
    """Read, normalise and check every split; carve eval out of train when asked."""
    train = load_split(task, recipe, "train", base_dir)
    assert train is not None
    evaluation = load_split(task, recipe, "eval", base_dir)
    if evaluation is None and recipe.data.eval_fraction:
        train, evaluation = hold_out(train, recipe.data.eval_fraction, recipe.train.seed)
    if recipe.data.max_eval_samples and evaluation is not None:
        evaluation = evaluation[: recipe.data.max_eval_samples]
    task.fit(train)
    for split in (evaluation or []), (train):
        for example in split:
            task.check_example(example)
    test = load_split(task, recipe, "test", base_dir)
    return Splits(train=train, eval=evaluation, test=test)


def hold_out(examples: list[Example], fraction: float, seed: int) -> tuple[list, list]:
    order = list(range(len(examples)))
    random.Random(seed).shuffle(order)
    n_eval = max(1, round(len(examples) * fraction))
    if n_eval >= len(examples):
        raise DataError(
            f"data.eval_fraction={fraction} leaves no training rows out of {len(examples)}",
            fix="lower data.eval_fraction or add data",
        )
    held = set(order[:n_eval])
    train = [e for i, e in enumerate(examples) if i not in held]
    evaluation = [examples[i] for i in sorted(held)]
    return train, evaluation


def method_context(
    recipe: Recipe, family: Family, task: Task, new_modules: list[str]
) -> MethodContext:
    return MethodContext(
        family=family, task_kind=task.model_kind(), config=recipe.method, new_modules=new_modules
    )


def get_method(recipe: Recipe) -> Method:
    return METHODS[recipe.method.name]


def precision_for(recipe: Recipe) -> str:
    import torch

    wanted = recipe.train.precision
    cuda = torch.cuda.is_available()
    if wanted == "auto":
        if not cuda:
            return "no"
        return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    if wanted == "fp16" and not cuda:
        raise FinetuneError(
            "train.precision=fp16 needs a CUDA GPU", fix="use train.precision=auto, fp32 or bf16"
        )
    return {"fp32": "no", "bf16": "bf16", "fp16": "fp16"}[wanted]


def make_accelerator(recipe: Recipe, run_dir: Path | None = None) -> Any:
    import torch
    from accelerate import Accelerator

    from finetune.run.trackers import accelerator_kwargs

    # no gradient_accumulation_steps: the loop accumulates itself, weighting micro-batches by
    # their label tokens (Accelerate would divide every micro-batch by grad_accum)
    return Accelerator(
        mixed_precision=precision_for(recipe),
        cpu=not torch.cuda.is_available(),
        **accelerator_kwargs(recipe, run_dir),  # train.report_to: log_with + project_dir
    )


def count_parameters(model: Any) -> tuple[int, int]:
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    total = sum(p.numel() for p in model.parameters())
    return trainable, total


def load_base_and_method(
    recipe: Recipe, family: Family, task: Task, saved_new_modules: list[str] | None = None
) -> tuple[Any, Method, MethodContext]:
    """The base model for this task plus the method and its context (new modules from the
    loading report, or those recorded in a saved run)."""
    from finetune.models.loading import load_base_model

    loaded = load_base_model(
        resolve_name(recipe.model.name),
        family,
        task.model_kind(),
        task.tokenizer,
        recipe.model.revision,
        task.model_config_overrides(),
    )
    new_modules = loaded.new_modules if saved_new_modules is None else saved_new_modules
    return loaded, get_method(recipe), method_context(recipe, family, task, new_modules)
