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

from finetune.data.encoding import encode_chunks, encode_features
from finetune.data.features import Features
from finetune.data.readers import read_source
from finetune.data.sources import LocalSource
from finetune.data.stream import StreamedSplit, scan_train, streamable
from finetune.errors import DataError, FinetuneError
from finetune.methods import METHODS, Method, MethodContext
from finetune.models.architecture import Architecture
from finetune.models.names import resolve_name
from finetune.recipe.schema import Recipe
from finetune.tasks import TASKS, Example, Task, TaskSettings

log = logging.getLogger(__name__)


@dataclass
class Splits:
    train: list[Example]  # empty when `streamed` holds the train split
    eval: list[Example] | None
    test: list[Example] | None
    streamed: StreamedSplit | None = None


def task_settings(recipe: Recipe) -> TaskSettings:
    """What the recipe's task reads beyond its own section, the method's one fact included."""
    return TaskSettings(
        max_length=recipe.train.max_length,
        max_target_length=recipe.train.max_target_length,
        decoding=recipe.eval.generation,
        extra_metrics=tuple(recipe.eval.metrics),
        virtual_tokens=METHODS[recipe.method.name].virtual_tokens,
    )


def make_task(recipe: Recipe, family: Architecture) -> Task:
    return TASKS[recipe.task.type](recipe.task, family, task_settings(recipe))


def load_split(
    task: Task, recipe: Recipe, split: str, base_dir: Path | None
) -> list[Example] | None:
    source = getattr(recipe.data, split)
    if source is None:
        return None
    limit = recipe.data.max_train_samples if split == "train" else recipe.data.max_eval_samples
    table = read_source(source, base_dir, limit, task.languages(recipe.task), recipe.train.seed)
    return task.examples(table, split)


def load_splits(
    task: Task, recipe: Recipe, base_dir: Path | None, stream_train: bool = False
) -> Splits:
    """Read, normalise and check every split; carve eval out of train when asked.

    `stream_train`: a local CSV/TSV/JSON Lines train file is checked and fitted in one pass
    and tokenised later chunk by chunk (`data/stream.py`, `train_features`), never held whole.
    """
    streamed, source = None, recipe.data.train
    if stream_train and streamable(source, base_dir, recipe.data.eval_fraction):
        assert isinstance(source, LocalSource)
        limit = recipe.data.max_train_samples
        streamed = scan_train(task, source, base_dir, limit)
        train: list[Example] = []
    else:
        train = load_split(task, recipe, "train", base_dir) or []
    evaluation = load_split(task, recipe, "eval", base_dir)
    if evaluation is None and recipe.data.eval_fraction:
        train, evaluation = hold_out(train, recipe.data.eval_fraction, recipe.train.seed)
    if recipe.data.max_eval_samples and evaluation is not None:
        evaluation = evaluation[: recipe.data.max_eval_samples]
    task.fit(train if streamed is None else streamed.firsts)
    for split in (evaluation or []), (train):
        for example in split:
            task.check_example(example)
    test = load_split(task, recipe, "test", base_dir)
    return Splits(train=train, eval=evaluation, test=test, streamed=streamed)


def train_features(task: Task, splits: Splits, cache: bool) -> Features:
    """The train split's features (a streamed split is read again only on a cache miss); the
    examples are released once tokenised."""
    if splits.streamed is not None:
        found = splits.streamed
        return encode_chunks(task, found.chunks, found.content, training=True, cache=cache)
    features = encode_features(task, splits.train, training=True, cache=cache)
    splits.train = []  # the features are all training needs; free the examples' strings
    return features


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
    recipe: Recipe, family: Architecture, task: Task, new_modules: list[str]
) -> MethodContext:
    return MethodContext(
        family=family, task_kind=task.model_kind(), config=recipe.method, new_modules=new_modules
    )


def get_method(recipe: Recipe) -> Method:
    return METHODS[recipe.method.name]


def precision_for(recipe: Recipe) -> str:
    """Accelerate's `mixed_precision` for this recipe on this machine (train.precision.py)."""
    from finetune.train.precision import ACCELERATE_NAMES, resolve_precision

    return ACCELERATE_NAMES[resolve_precision(recipe.train.precision, _architecture(recipe))]


def _architecture(recipe: Recipe) -> Architecture | None:
    from finetune.setup.architecture import recipe_architecture

    try:
        return recipe_architecture(recipe)
    except FinetuneError:  # reported by validate; the precision rule then assumes no family
        return None


def make_accelerator(recipe: Recipe, run_dir: Path | None = None) -> Any:
    from finetune.run.trackers import accelerator_kwargs

    # no gradient_accumulation_steps: the loop accumulates itself, weighting micro-batches by
    # their label tokens (Accelerate would divide every micro-batch by grad_accum)
    # train.report_to: log_with + project_dir
    return new_accelerator(precision_for(recipe), **accelerator_kwargs(recipe, run_dir))


def new_accelerator(mixed_precision: str, **kwargs: Any) -> Any:
    """An Accelerator on the GPU when there is one, with this mixed precision.

    Accelerate keeps one process-wide state and refuses a second Accelerator with another
    precision; a single process (tests, `compare`, eval after run) may legitimately change it,
    so the state is reset there. Launched processes (WORLD_SIZE > 1) never reach this twice.
    """
    import os

    from accelerate import Accelerator
    from accelerate.state import AcceleratorState

    current = AcceleratorState._shared_state.get("_mixed_precision")
    single = int(os.environ.get("WORLD_SIZE", "1")) == 1
    if current is not None and current != mixed_precision and single:
        AcceleratorState._reset_state()
    accelerator = Accelerator(mixed_precision=mixed_precision, cpu=not cuda_available(), **kwargs)
    wanted_fsdp = os.environ.get("ACCELERATE_USE_FSDP", "false").lower() == "true"
    if wanted_fsdp and str(accelerator.distributed_type.value) != "FSDP":
        log.warning(
            "an FSDP config was given but accelerate uses FSDP only on GPUs: this run trains "
            "as %s (every process holds the whole model)",
            accelerator.distributed_type.value,
        )
    return accelerator


def cuda_available() -> bool:
    """One seam for "is there a GPU" (tests patch it to check which device is asked for)."""
    import torch

    return torch.cuda.is_available()


def apply_method(recipe: Recipe, loaded: Any, method: Method, ctx: MethodContext) -> Any:
    """The method on the loaded base, with the recipe's memory levers: a k-bit base is
    prepared (fp32 norms, input grads) before the adapter goes on; gradient checkpointing is
    switched on after, on the transformers model inside whatever wrapper the method made."""
    from finetune.models.memory import enable_gradient_checkpointing, prepare_kbit

    base = loaded.model
    if recipe.model.quantization is not None:
        base = prepare_kbit(base, recipe.train.gradient_checkpointing)
    model = method.apply(base, ctx)
    if recipe.train.gradient_checkpointing:
        enable_gradient_checkpointing(model)
    return model


def count_parameters(model: Any) -> tuple[int, int]:
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    total = sum(p.numel() for p in model.parameters())
    return trainable, total


def load_base_and_method(
    recipe: Recipe, family: Architecture, task: Task, saved_new_modules: list[str] | None = None
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
        quantization_bits(recipe),
    )
    new_modules = loaded.new_modules if saved_new_modules is None else saved_new_modules
    return loaded, get_method(recipe), method_context(recipe, family, task, new_modules)


def quantization_bits(recipe: Recipe) -> int | None:
    """4 or 8 for a QLoRA recipe, after the same checks `validate` makes (exit 2, no traceback)."""
    from finetune.models.memory import quantization_problems

    quant = recipe.model.quantization
    if quant is None:
        return None
    problems = quantization_problems(recipe, "recipe")
    if problems:
        from finetune.errors import RecipeError

        raise RecipeError(problems)
    return int(quant.bits)
