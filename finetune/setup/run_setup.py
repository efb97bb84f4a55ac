"""`RunSetup`: everything a run is made of, assembled in named steps in one place.

`RunSetup.for_training(recipe, ...)` builds a run to train: architecture, task, data, base
model + method, the Accelerator's preparation, batches, optimizer and scheduler (built together
and handed to the loop). `RunSetup.from_run_dir(path)` rebuilds a finished run for `eval`,
`predict`, `merge` and `push`: the recipe and run.json it saved, its task with the labels it
learnt, its tokenizer, and its trained method on a fresh base model. Commands parse, build a
RunSetup and call one verb (finetune/pipeline); nothing below the commands builds a run.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from finetune.errors import RunDirError
from finetune.methods import METHODS
from finetune.methods.base import Method, TrainingPlan
from finetune.recipe.io import load_recipe
from finetune.recipe.schema import rate_note
from finetune.run.files import is_finished
from finetune.run.info import ParameterCounts as RunInfoCounts
from finetune.run.info import RunInfo
from finetune.run.layout import RunPaths
from finetune.setup.architecture import recipe_architecture
from finetune.setup.data import Splits, eval_features, load_splits, train_features
from finetune.setup.model import (
    BaseAndMethod,
    ParameterCounts,
    apply_method,
    count_parameters,
    load_base_and_method,
    store_frozen_weights,
)
from finetune.setup.task import make_task

if TYPE_CHECKING:  # pragma: no cover
    from finetune.data.features import Features
    from finetune.models.architecture import Architecture
    from finetune.recipe.schema import Recipe
    from finetune.tasks import Task
    from finetune.train.batching import TrainBatches
    from finetune.train.compiled import CompilePlan
    from finetune.train.graphs import Forward
    from finetune.train.optim import Optimization
    from finetune.types import Accelerator, Model, Tokenizer

log = logging.getLogger(__name__)


@dataclass
class TrainingParts:
    """What only a run started by `run` has: its data, batches, optimizer and scheduler (the
    last three None when the method trains nothing: the zero-shot baseline)."""

    splits: Splits
    eval_set: Features | None
    train_set: Features | None = None
    batches: TrainBatches | None = None
    optimization: Optimization | None = None
    compiled: CompilePlan | None = None
    forward: Forward | None = None  # the compiled training forward (train.cuda_graphs)


@dataclass
class SavedRun:
    """Where a finished run was read from, what run.json says of it, and its adapter's name
    when several runs share one loaded base (`finetune predict RUN_A RUN_B`)."""

    path: Path
    info: RunInfo
    adapter: str | None = None


@dataclass
class RunSetup:
    """One run, assembled: recipe, architecture, task (with its tokenizer), method, model."""

    recipe: Recipe
    architecture: Architecture
    task: Task
    method: Method
    model: Model
    new_modules: list[str]
    parameters: ParameterCounts
    revision: str | None = None  # the base model's resolved revision, pinned in recipe.yaml
    accelerator: Accelerator | None = None
    training: TrainingParts | None = None
    saved: SavedRun | None = None

    # ------------------------------------------------------------------ training

    @classmethod
    def for_training(
        cls, recipe: Recipe, base_dir: Path | None, accelerator: Accelerator
    ) -> RunSetup:
        """Every step before the loop, in order: data is checked before any weight loads, and
        the random state is seeded first so a run is reproducible whatever is cached."""
        from accelerate.utils import set_seed

        set_seed(recipe.train.seed)
        arch = recipe_architecture(recipe)
        task = make_task(recipe, arch)
        splits = load_splits(task, recipe, base_dir, stream_train=True)
        task.tokenizer = base_tokenizer(recipe)
        trains = METHODS[recipe.method.name].trains
        train_set = train_features(task, splits, recipe.data.cache) if trains else None
        eval_set = eval_features(task, splits, recipe.data.cache)
        batches = _training_batches(recipe, task, train_set, accelerator) if train_set else None
        plan = _training_plan(recipe, batches) if batches is not None else None
        parts = load_base_and_method(recipe, arch, task, plan=plan)
        # a fresh head set up from the training data (regression: its bias at the mean target);
        # a resumed run loads its trained head over it
        task.initialise_head(parts.loaded.model, parts.loaded.new_modules, train_set)
        model = _setup_model(recipe, parts)
        counts = count_parameters(model)  # before a tied head gets a copy of its own
        # nothing trains under the zero-shot baseline and nothing is saved: stored as at inference
        inference = not parts.method.trains
        store_frozen_weights(recipe, parts.method, model, accelerator, inference=inference)
        _log_parameters(recipe, parts, counts)
        if batches is None:  # nothing trains: the model as `eval` prepares it, no optimizer
            model = accelerator.prepare_model(model, evaluation_mode=True)
            training = TrainingParts(splits, eval_set)
        else:
            model, optimization = _setup_optimization(recipe, parts, model, batches, accelerator)
            compiled = _setup_compile(recipe, parts, model, optimization, accelerator)
            forward = _graphed_forward(recipe, task, model, compiled, accelerator)
            training = TrainingParts(
                splits, eval_set, train_set, batches, optimization, compiled, forward
            )
        return cls(
            recipe,
            arch,
            task,
            parts.method,
            model,
            parts.loaded.new_modules,
            counts,
            revision=parts.loaded.revision,
            accelerator=accelerator,
            training=training,
        )

    # ------------------------------------------------------------------ a finished run

    @classmethod
    def from_run_dir(cls, path: Path, full_precision_base: bool = False) -> RunSetup:
        """The finished run in `path` with its trained weights, in eval mode.

        `full_precision_base` (merge): a QLoRA run's adapter goes onto the base in full precision
        instead of k-bit, because folding LoRA into 4-bit integers would round the update away;
        the merged model is then an ordinary full-precision model."""
        opened = open_saved(path, full_precision_base)
        parts = load_base_and_method(
            opened.recipe, opened.architecture, opened.task, opened.saved.info.new_modules
        )
        artifact = RunPaths(path).artifact(opened.saved.info.artifact_dir)
        model = parts.method.load(parts.loaded.model, artifact, parts.context)
        model.eval()
        return opened.with_model(model, parts)

    @property
    def run_dir(self) -> Path:
        if self.saved is None:
            raise ValueError("this RunSetup was not read from a run directory")
        return self.saved.path

    @property
    def info(self) -> RunInfo:
        if self.saved is None:
            raise ValueError("this RunSetup was not read from a run directory")
        return self.saved.info

    def run_info(self) -> RunInfo:
        """run.json for this run (training): what `eval`, `predict` and `merge` rebuild it from."""
        from finetune.run.artifacts import library_versions
        from finetune.tasks.main_metric import main_metric

        return RunInfo(
            versions=library_versions(),
            architecture=self.architecture.model_type,
            task=self.recipe.task.type,
            model_kind=self.task.model_kind(),
            main_metric=main_metric(self.recipe.task),
            method=self.method.name,
            lr=self.recipe.train.lr if self.method.trains else None,
            artifact_dir=self.method.artifact_dir,
            new_modules=self.new_modules,
            task_state=self.task.state.to_dict(),
            parameters=RunInfoCounts(
                trainable=self.parameters.trainable, total=self.parameters.total
            ),
        )

    def activate(self) -> None:
        """Switch a shared base to this run's adapter (a no-op for a run loaded alone)."""
        if self.saved is not None and self.saved.adapter is not None:
            self.method.activate(self.model, self.saved.adapter)


# --------------------------------------------------------------------------- steps


def base_tokenizer(recipe: Recipe) -> Tokenizer:
    from finetune.models.loading import load_tokenizer
    from finetune.models.names import resolve_name

    return load_tokenizer(resolve_name(recipe.model.name).path, recipe.model.revision)


def _training_batches(
    recipe: Recipe, task: Task, train_set: Features, accelerator: Accelerator
) -> TrainBatches:
    """This process's training batches (length-grouped, sharded), made before the model: the
    method may read them (EVA, CorDA) and plans its schedule on their count (AdaLoRA)."""
    from finetune.train.batching import train_batches

    causal = task.model_kind() == "causal"
    return train_batches(train_set, task.collate, recipe.train, accelerator, causal)


def _training_plan(recipe: Recipe, batches: TrainBatches) -> TrainingPlan:
    """The planned optimizer steps and the first training batches, for the method's apply."""
    from finetune.train.optim import plan_steps

    _, total = plan_steps(len(batches.sampler), recipe.train)
    return TrainingPlan(total_steps=total, batches=batches.first)


def _setup_model(recipe: Recipe, parts: BaseAndMethod) -> Model:
    """The method on the base, refused when it would train nothing or leak into the backbone;
    then what the optimizer freezes itself (LoRA-FA's A matrices)."""
    from finetune.methods.guards import check_trainable
    from finetune.models.first_token import first_token_last_layer
    from finetune.models.lean_backward import lean_backward
    from finetune.train.optim import freeze_for_optimizer

    model = apply_method(recipe, parts)
    if parts.method.trains:  # a method that trains nothing has nothing to guard
        check_trainable(model, parts.method, parts.loaded.new_modules)
        freeze_for_optimizer(model, recipe.train)
        lean_backward(model)  # less kept for the backward pass, faster dropout draws
        first_token_last_layer(model)  # a first-token classifier's last layer: position 0 only
    return model


def _log_parameters(recipe: Recipe, parts: BaseAndMethod, counts: ParameterCounts) -> None:
    log.info(
        "%s on %s (%s): trainable %s / %s parameters (%.3f%%); new modules trained: %s",
        parts.method.name,
        recipe.model.name,
        parts.context.family.model_type,
        f"{counts.trainable:,}",
        f"{counts.total:,}",
        100 * counts.share,
        ", ".join(parts.loaded.new_modules) or "none",
    )
    if parts.method.trains:
        log.info("%s", rate_note(recipe))


def _setup_optimization(
    recipe: Recipe,
    parts: BaseAndMethod,
    model: Model,
    batches: TrainBatches,
    accelerator: Accelerator,
) -> tuple[Model, Optimization]:
    """The optimizer on the model, both prepared by Accelerate (FSDP shards the blocks chosen
    here), then the schedule over the batches' planned steps."""
    from finetune.train.checkpoints import keep_only_trainable
    from finetune.train.optim import build_optimization, build_optimizer
    from finetune.train.sharded import distributed_kind, fsdp_wrap_blocks

    # FSDP and DeepSpeed swap the parameters for shards or flat partitions after this point
    fused = distributed_kind(accelerator) in ("NO", "MULTI_GPU", "MULTI_CPU")
    optimizer = build_optimizer(
        model, recipe.train, parts.loaded.new_modules, parts.method.no_decay, fused=fused
    )
    blocks = fsdp_wrap_blocks(accelerator, model)
    if blocks is not None:
        log.info("FSDP shards each of: %s", ", ".join(blocks) or "the whole model as one unit")
    model, optimizer = accelerator.prepare(model, optimizer)
    if not parts.method.trains_backbone:
        keep_only_trainable(accelerator, model)
    return model, build_optimization(optimizer, recipe.train, len(batches.sampler))


def _setup_compile(
    recipe: Recipe,
    parts: BaseAndMethod,
    model: Model,
    optimization: Optimization,
    accelerator: Accelerator,
) -> CompilePlan:
    """`train.compile` decided for this run's length and cache, then applied to its blocks."""
    from finetune.train.compiled import compile_model, graph_key, plan_compile, with_graphs
    from finetune.train.graphs import why_not_graphs

    key = graph_key(parts.loaded.model, parts.method.name, str(accelerator.mixed_precision))
    device = accelerator.device.type
    plan = plan_compile(recipe.train.compile, optimization.total_steps, key, device)
    quantized = recipe.model.quantization is not None
    why_not = why_not_graphs(
        recipe.task.type, accelerator.num_processes, quantized, recipe.train.grad_accum
    )
    plan = with_graphs(plan, recipe.train.cuda_graphs, why_not)
    compile_model(model, plan)
    return plan


def _graphed_forward(
    recipe: Recipe, task: Task, model: Model, plan: CompilePlan, accelerator: Accelerator
) -> Forward | None:
    """The training forward compiled whole when the plan graphs it (train/graphs.py)."""
    if not plan.graphs:
        return None
    from finetune.train.graphs import graphed_forward, length_buckets

    pad_id = getattr(task.tokenizer, "pad_token_id", None) or 0
    buckets = length_buckets(recipe.train.max_length)
    cuda = accelerator.device.type == "cuda"
    return graphed_forward(model, buckets, pad_id, cuda)


# --------------------------------------------------------------------------- finished runs


def read_run_dir(path: Path) -> tuple[Recipe, RunInfo]:
    """A finished run's recipe and run.json, refused with the reason when it is none."""
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
    return load_recipe(paths.recipe), RunInfo.read(paths.run_info)


@dataclass
class OpenedRun:
    """A finished run read (recipe, run.json, task with its labels and tokenizer), weights
    not loaded yet."""

    recipe: Recipe
    architecture: Architecture
    task: Task
    method: Method
    saved: SavedRun

    def with_model(self, model: Model, parts: BaseAndMethod) -> RunSetup:
        return RunSetup(
            self.recipe,
            self.architecture,
            self.task,
            self.method,
            model,
            parts.context.new_modules,
            count_parameters(model),
            saved=self.saved,
        )


def open_saved(path: Path, full_precision_base: bool = False) -> OpenedRun:
    """The run's task with the labels it was trained with (run.json) and its own tokenizer."""
    from finetune.models.detect import architecture_named
    from finetune.models.loading import load_tokenizer
    from finetune.tasks.base import TaskState

    recipe, info = read_run_dir(path)
    if full_precision_base and recipe.model.quantization is not None:
        log.info(
            "this run trained on a %d-bit base: merging into the de-quantised (full-precision) "
            "base weights; the merged model is full precision and may differ slightly from the "
            "quantised run's outputs",
            recipe.model.quantization.bits,
        )
        model_section = recipe.model.model_copy(update={"quantization": None})
        recipe = recipe.model_copy(update={"model": model_section})
    arch = architecture_named(info.architecture)
    method = METHODS[info.method]
    task = make_task(recipe, arch, method)
    task.state = TaskState.from_dict(info.task_state)
    task.tokenizer = load_tokenizer(str(RunPaths(path).tokenizer))
    return OpenedRun(recipe, arch, task, method, SavedRun(path, info))
