"""Names for the values finetune passes around: torch, transformers and accelerate objects, and
values as JSON files hold them.

The library classes are used in annotations only (`if TYPE_CHECKING: from finetune.types import
Model`), so that the type checker sees the real classes while `finetune --help` and `validate`
never import torch. `Accelerator` is a Protocol: accelerate ships no type information, so an
alias of its class would be untyped to mypy; the Protocol names what finetune calls on it and
lets mypy check those calls.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Iterable, Mapping, Sequence
from contextlib import AbstractContextManager
from typing import TYPE_CHECKING, Protocol, TypeAlias, TypedDict, TypeVar, Union

if TYPE_CHECKING:  # pragma: no cover
    import torch
    from torch import Tensor as Tensor
    from torch.nn import Module as Model
    from torch.optim import Optimizer as Optimizer
    from torch.optim.lr_scheduler import LRScheduler as Scheduler
    from torch.utils.data import DataLoader as DataLoader
    from transformers import PreTrainedModel as PretrainedModel
    from transformers import PreTrainedTokenizerBase as Tokenizer

    # parameter name -> tensor: what `state_dict()` returns and what a checkpoint holds
    StateDict: TypeAlias = dict[str, Tensor]

# A value as a JSON file (or a YAML recipe) holds it: what `json.loads` returns and `json.dumps`
# writes. The containers are the read-only ABCs, so a dict[str, float] or a list[str] is JSON
# too; code that changes a decoded object narrows it with isinstance(value, dict) first.
Scalar: TypeAlias = Union[bool, int, float, str, None]  # a JSON value that is no container
JSON: TypeAlias = Union[Scalar, Sequence["JSON"], Mapping[str, "JSON"]]
# one JSON object a function builds or owns (metrics.json, a log.jsonl record, a recipe's data)
JSONObject: TypeAlias = dict[str, JSON]
# one row of a data table: column -> cell as its file holds it (text from CSV, any JSON value
# from JSON lines, whatever pyarrow gives for Parquet); tasks check each cell they read
TableRow: TypeAlias = dict[str, object]

_T = TypeVar("_T")


class Feature(TypedDict, total=False):
    """One encoded example, as a task's `encode` makes it and its `collate` reads it: token
    ids, its index in the split, its length for the length-grouped sampler, and its label (a
    class id, a regression target, or a generation task's target token ids)."""

    input_ids: list[int]
    token_type_ids: list[int]  # BERT-family text pairs
    prompt_ids: list[int]  # a decoder's prompt alone, for generation
    labels: list[int] | float  # token ids (generation) or a class id / target (int is a float)
    idx: int
    length: int


class Batch(TypedDict, total=False):
    """A collated batch of `Feature`s: the model's inputs and labels as tensors, with `idx`
    (the rows' indices in the split, dropped before the forward pass) and, for a decoder in
    training, `logits_to_keep` (how many trailing positions need logits)."""

    input_ids: Tensor
    attention_mask: Tensor
    token_type_ids: Tensor
    labels: Tensor
    idx: Tensor
    prompt_ids: Tensor  # left-padded decoder prompts (generation)
    prompt_mask: Tensor
    logits_to_keep: int


class Accelerator(Protocol):
    """The part of `accelerate.Accelerator` finetune uses (tests pass stand-ins with just the
    attributes a function reads)."""

    @property
    def is_main_process(self) -> bool: ...
    @property
    def num_processes(self) -> int: ...
    @property
    def process_index(self) -> int: ...
    @property
    def device(self) -> torch.device: ...
    @property
    def distributed_type(self) -> enum.Enum: ...  # accelerate.DistributedType, a str enum
    @property
    def mixed_precision(self) -> str: ...
    @property
    def state(self) -> object: ...  # AcceleratorState: its plugins are read with getattr

    def wait_for_everyone(self) -> None: ...
    def save_state(self, output_dir: str) -> str: ...
    def load_state(self, input_dir: str, *, strict: bool = ...) -> None: ...
    def register_for_checkpointing(self, *objects: object) -> None: ...
    def register_save_state_pre_hook(
        self, hook: Callable[[list[Model], list[StateDict], str], None]
    ) -> object: ...
    # the model may come back wrapped (DistributedDataParallel, FSDP), so it is a Model only
    def prepare(self, model: Model, optimizer: Optimizer, /) -> tuple[Model, Optimizer]: ...
    def prepare_model(self, model: Model, *, evaluation_mode: bool = ...) -> Model: ...
    def prepare_data_loader(
        self, data_loader: DataLoader[_T], device_placement: bool | None = ...
    ) -> DataLoader[_T]: ...
    def unwrap_model(self, model: Model) -> Model: ...
    def autocast(self) -> AbstractContextManager[None]: ...
    def no_sync(self, model: Model) -> AbstractContextManager[None]: ...
    def backward(self, loss: Tensor) -> None: ...
    def clip_grad_norm_(self, parameters: Iterable[Tensor], max_norm: float) -> Tensor | None: ...
    def reduce(self, tensor: Tensor, reduction: str = ...) -> Tensor: ...
    def init_trackers(self, project_name: str, config: Mapping[str, JSON] | None = ...) -> None: ...
    def log(self, values: Mapping[str, float], step: int | None = ...) -> None: ...
    def end_training(self) -> None: ...


__all__ = [
    "JSON",
    "Accelerator",
    "Batch",
    "DataLoader",
    "Feature",
    "JSONObject",
    "Model",
    "Optimizer",
    "PretrainedModel",
    "Scalar",
    "Scheduler",
    "StateDict",
    "TableRow",
    "Tensor",
    "Tokenizer",
]
