"""The one small interface every PEFT method implements.

A method wraps a freshly loaded model (`apply`), saves only what it trained (`save`), and puts
the same weights back on a freshly loaded base model (`load`). Methods never know about tasks:
the task's new modules (classification head, cross-attention) arrive in `MethodContext`.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from finetune.recipe.section import Section

if TYPE_CHECKING:  # pragma: no cover
    import torch

    from finetune.errors import Problem
    from finetune.models.architecture import Architecture
    from finetune.types import Batch, Model, PretrainedModel, StateDict


# who loads a method's saved artefact: peft (PeftModel.from_pretrained), transformers
# (from_pretrained of a whole model), or finetune itself (our adapter formats)
Library = Literal["peft", "transformers", "finetune"]


# "lora-family": additive weight updates (low-rank or otherwise), "adapters": other changes of
# the base's layers (rescaling, rotations, bottlenecks, norms, biases), "prompts": virtual tokens;
# `compare --methods lora-family` etc. run one group
Group = Literal["full", "lora-family", "adapters", "prompts"]
GROUPS: tuple[Group, ...] = ("lora-family", "adapters", "prompts")


@dataclass
class TrainingPlan:
    """What a run in training tells the method at apply time: the planned optimizer steps
    (AdaLoRA's rank schedule) and the run's own training batches, in training order and on
    the model's device (`batches(n)`: the first n), for inits that read data (EVA, CorDA)."""

    total_steps: int
    batches: Callable[[int], Sequence[Batch]]


@dataclass
class MethodContext:
    """What a method needs to know about the model it wraps, and nothing about the task."""

    family: Architecture
    task_kind: str  # "classification" | "seq2seq" | "causal"
    config: Any  # the recipe's method section
    new_modules: list[str] = field(default_factory=list)  # newly initialised: always train
    plan: TrainingPlan | None = None  # None when a saved run is rebuilt (eval, merge, predict)


class Method(ABC):
    """One registry entry: behaviour plus everything the rest of the tool asks about a method.

    `config_class` is the recipe schema for `method:` (the schema's union is built from the
    registry), `default_lr` is the rate used when a recipe (`train.lr: null`, the default) or
    `compare` does not choose one, with `lr_source` saying where that value comes from (the
    README's learning-rate table is generated from both),
    `library` says which library loads what `artifact_dir` holds (peft's adapter format, a
    transformers model, or finetune's own format), `trains_backbone` marks full fine-tuning for the
    guards and the model card, `quantizable` allows a k-bit base (`model.quantization`), and
    `trains: False` marks a method that trains nothing (`none`, the zero-shot baseline): `run`
    then evaluates the base model as it is, with no optimizer, no loop and no saved weights.
    """

    name: str = ""
    config_class: type[Section] = Section
    default_lr: float = 5e-4
    lr_source: str = ""
    mergeable: bool = False
    trains_backbone: bool = False
    # False: nothing trains (the zero-shot baseline); no guard, optimizer, loop or artefact
    trains: bool = True
    # trains only weights it adds beside frozen base layers, so the base may be k-bit (QLoRA)
    quantizable: bool = False
    description: str = ""
    label: str = ""  # how `compare` names the method's row and run (default: its name)
    artifact_dir: str = "adapter"
    library: Library = "peft"
    # prepends trainable virtual tokens to every input (prompt learning): peft then pads the
    # labels for them, so tasks keep full-length labels and logits (TaskSettings)
    virtual_tokens: bool = False
    # names of trainable parameters that start away from zero (IA3 vectors at 1, DoRA
    # magnitudes at ||W||): weight decay would pull them to 0 and unlearn the identity
    no_decay: tuple[str, ...] = ()
    group: Group = "adapters"
    # the `train.optimizer` values this method can train with (train/optim.py)
    optimizers: tuple[str, ...] = ("adamw",)
    # computes with the frozen base weights outside autocast's casts (DoRA's column norms), so
    # they stay fp32 under mixed precision (models/frozen_dtype.py)
    reads_base_weights: bool = False

    def unsupported_reason(self, family: Architecture, task_kind: str) -> str | None:
        """Why this method cannot serve this family/task, or None if it can."""
        return None

    def option_problems(self, config: Any, where: str) -> list[Problem]:
        """What `validate` must refuse in this method's options beyond their types (an option
        that needs other options, or hardware this machine lacks); empty when none."""
        return []

    def step_hook(self, model: Model) -> Callable[[int], None] | None:
        """Work the method does after every optimizer step, before the gradients are cleared
        (AdaLoRA's rank allocation reads them), called with the 1-based step; None: none. The
        training verb passes it to the loop, which knows no method by name; a hook with
        `state_dict`/`load_state_dict` is saved in checkpoints and restored by `--resume`."""
        return None

    @abstractmethod
    def apply(self, model: torch.nn.Module, ctx: MethodContext) -> torch.nn.Module: ...

    @abstractmethod
    def save(
        self, model: torch.nn.Module, out_dir: Path, state_dict: StateDict | None = None
    ) -> None:
        """Write the trained weights; `state_dict`, when given, holds the model's whole tensors
        (FSDP2 shards the model's own, see train/sharded.py) and is read instead of the model."""

    @abstractmethod
    def load(self, model: torch.nn.Module, in_dir: Path, ctx: MethodContext) -> torch.nn.Module: ...

    def owns_parameter(self, name: str, config: object = None) -> bool:
        """Whether a trainable parameter belongs to this method (not to the frozen backbone).

        `config` is the recipe's method section (or, for a loaded peft model, its peft config),
        for methods whose trainable set depends on an option (LoRA's `bias: all`, read with
        getattr). The guards ask this to catch a leaking backbone.
        """
        return False

    # Several trained adapters on one loaded base (`finetune predict RUN_A RUN_B`): methods
    # with a multi-adapter API (peft's load_adapter/set_adapter) set this and the two methods
    # below; the others are loaded on a base model of their own.
    multi_adapter: bool = False

    def load_named(
        self, model: torch.nn.Module, in_dir: Path, ctx: MethodContext, adapter_name: str
    ) -> torch.nn.Module:
        """Add the saved adapter under `adapter_name` (the first call wraps the bare base)."""
        raise NotImplementedError(f"{self.name} has no multi-adapter API")

    def activate(self, model: torch.nn.Module, adapter_name: str) -> None:
        """Make `adapter_name` the adapter the next forward pass uses."""
        raise NotImplementedError(f"{self.name} has no multi-adapter API")

    # `finetune merge-adapters`: adapters of several runs combined into one (`combine`)
    arithmetic: bool = False

    def combine(
        self, model: Model, names: list[str], weights: list[float], how: str, density: float
    ) -> int:
        """Add adapter `default` to `model` (holding the adapters `names`), the runs' adapters
        combined with `weights` as `how` says; make it active and return its rank."""
        raise NotImplementedError(f"{self.name} has no adapter arithmetic")

    def merge_refusal(self, config: Any) -> str | None:
        """Why a run of this (mergeable) method with these options cannot be merged, or None."""
        return None

    def merge(self, model: torch.nn.Module) -> PretrainedModel:
        """The plain transformers model with the method folded in (only if mergeable)."""
        raise NotImplementedError(f"{self.name} cannot be merged into the base model")


def inside(name: str, module_names: list[str]) -> bool:
    """Whether a parameter/module name is one of `module_names` or lies inside one."""
    dotted = f".{name}."
    return any(f".{m}." in dotted for m in module_names)


def freeze_all_but(model: torch.nn.Module, module_names: list[str]) -> None:
    """Freeze every parameter, then unfreeze the named modules (head, new layers).

    A parameter a new module shares with the backbone (an LM head tied to the word embeddings)
    stays frozen: training it would silently change the frozen backbone too.
    """
    for param in model.parameters():
        param.requires_grad_(False)
    backbone = {
        id(p)
        for n, p in model.named_parameters(remove_duplicate=False)
        if not inside(n, module_names)
    }
    for name, module in model.named_modules():
        if inside(name, module_names):
            for param in module.parameters():
                if id(param) not in backbone:
                    param.requires_grad_(True)
