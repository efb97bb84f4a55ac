"""The model step of a run: the base model for the task's head, the method on it, and the
recipe's memory levers, in that order.

A k-bit base (QLoRA) is prepared (fp32 norms, input grads) before the adapter goes on;
gradient checkpointing is switched on after, on the transformers model inside whatever wrapper
the method made. New modules (heads, bert2bert cross-attention) come from the loading report
when training, and from run.json when a saved run is rebuilt.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING

from finetune.errors import Problem, RecipeError
from finetune.methods import METHODS, Method, MethodContext
from finetune.models.names import resolve_name

if TYPE_CHECKING:  # pragma: no cover
    from finetune.methods.base import TrainingPlan
    from finetune.models.architecture import Architecture
    from finetune.models.pretrained import LoadedModel
    from finetune.recipe.schema import Recipe
    from finetune.tasks import Task
    from finetune.types import Accelerator, Model

log = logging.getLogger(__name__)


@dataclass
class ParameterCounts:
    trainable: int
    total: int

    @property
    def share(self) -> float:
        return self.trainable / self.total if self.total else 0.0


@dataclass
class BaseAndMethod:
    """A freshly loaded base model, the method that will wrap it, and what the method needs."""

    loaded: LoadedModel
    method: Method
    context: MethodContext


def method_context(
    recipe: Recipe,
    arch: Architecture,
    task: Task,
    new_modules: list[str],
    plan: TrainingPlan | None = None,
) -> MethodContext:
    return MethodContext(
        family=arch,
        task_kind=task.model_kind(),
        config=recipe.method,
        new_modules=new_modules,
        plan=plan,
    )


def load_base_and_method(
    recipe: Recipe,
    arch: Architecture,
    task: Task,
    saved_new_modules: list[str] | None = None,
    plan: TrainingPlan | None = None,
) -> BaseAndMethod:
    """The base model for this task plus the method and its context (new modules from the
    loading report, or those recorded in a saved run; the training plan when training)."""
    from finetune.models.loading import load_base_model

    loaded = load_base_model(
        resolve_name(recipe.model.name),
        arch,
        task.model_kind(),
        task.tokenizer,
        recipe.model.revision,
        task.model_config_overrides(),
        quantization_bits(recipe),
    )
    task.prepare_base(loaded.model)
    new_modules = loaded.new_modules if saved_new_modules is None else saved_new_modules
    method = METHODS[recipe.method.name]
    return BaseAndMethod(loaded, method, method_context(recipe, arch, task, new_modules, plan))


def apply_method(recipe: Recipe, parts: BaseAndMethod) -> Model:
    """The method on the loaded base, with the recipe's memory levers around it."""
    from finetune.models.memory import enable_gradient_checkpointing, prepare_kbit

    base = parts.loaded.model
    checkpointing = checkpointing_on(
        recipe.train.gradient_checkpointing, parts.context.task_kind, parts.method.virtual_tokens
    )
    if recipe.model.quantization is not None:
        base = prepare_kbit(base, checkpointing)
    model = parts.method.apply(base, parts.context)
    if checkpointing:
        enable_gradient_checkpointing(model)
    return model


def store_frozen_weights(
    recipe: Recipe, method: Method, model: Model, accelerator: Accelerator, inference: bool = False
) -> None:
    """Under mixed precision, frozen linear weights are stored in the compute dtype: the same
    numbers without a cast per call (models/frozen_dtype.py). At inference every weight is
    frozen (a tied output head gets its own copy), so a decoder's generation no longer casts
    the whole model at every token. Not for a method that reads the base weights itself
    (DoRA), on a k-bit base, or under FSDP (one dtype per flattened unit) or DeepSpeed (its
    own dtype rules). Then an input that several linear layers read is cast once for all of
    them (models/shared_cast.py)."""
    import torch

    from finetune.models.frozen_dtype import store_frozen_in
    from finetune.models.shared_cast import share_input_casts
    from finetune.train.sharded import distributed_kind

    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(str(accelerator.mixed_precision))
    if dtype is None or method.reads_base_weights or recipe.model.quantization is not None:
        return
    if distributed_kind(accelerator) in ("FSDP", "DEEPSPEED"):
        return
    store_frozen_in(model, dtype, inference=inference)
    share_input_casts(model, dtype)  # after: it reads which LoRA layers cast their input


def checkpointing_on(setting: bool | str, task_kind: str, virtual_tokens: bool) -> bool:
    """`train.gradient_checkpointing` resolved. auto: on for decoder generation, where every
    layer keeps the activations of prompt + target (SmolLM2-135M on DialogSum, batch 8 x 448
    tokens: 6.9 GB peak without, 2.9 GB with, at 0.85x the speed;
    benchmarks/results/decoder_memory.md); off for classification's short inputs,
    encoder-decoders (their decoder sees only the target) and methods that prepend virtual
    tokens (prefix tuning's past key/values do not survive transformers' checkpointing)."""
    if setting == "auto":
        return task_kind == "causal" and not virtual_tokens
    return bool(setting)


def count_parameters(model: Model) -> ParameterCounts:
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    total = sum(p.numel() for p in model.parameters())
    return ParameterCounts(trainable, total)


def quantization_bits(recipe: Recipe) -> int | None:
    """4 or 8 for a QLoRA recipe, after the same checks `validate` makes (exit 2, no traceback)."""
    quant = recipe.model.quantization
    if quant is None:
        return None
    problems = quantization_problems(recipe, "recipe")
    if problems:
        raise RecipeError(problems)
    return int(quant.bits)


def quantization_problems(recipe: Recipe, where: str) -> list[Problem]:
    """Why `model.quantization` cannot be used by this recipe on this machine (empty: it can).

    Method first (a recipe fix), then hardware (a machine fix); torch is imported only when
    quantisation is asked for, so `validate` stays light for everyone else.
    """
    quant = getattr(recipe.model, "quantization", None)
    if quant is None:
        return []

    key = f"{where}: model.quantization"
    method = METHODS[recipe.method.name]
    if not method.quantizable:
        able = ", ".join(n for n, m in METHODS.items() if m.quantizable)
        return [
            Problem(
                key,
                f"method {method.name} cannot train on a {quant.bits}-bit base: k-bit weights are "
                "frozen integers (no gradient), so only methods that add their own trainable "
                "weights beside them (the LoRA family, as in QLoRA) can use it",
                f"use method.name: one of {able}, or remove model.quantization",
            )
        ]
    from finetune.models.memory import hardware_problems

    return hardware_problems(key)
