"""Token-id tensors of a generation batch: padding (right, or left for decoder prompts),
trimming padding columns, the per-example loss over labels, the slices of a shared encoder
output, and the unwrapped model.

Shared by the generation task, the decoders' shared prompt pass and the tests.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Protocol, cast

if TYPE_CHECKING:  # pragma: no cover
    import torch
    from transformers import GenerationConfig, PretrainedConfig
    from transformers.modeling_outputs import BaseModelOutput

    from finetune.types import Model, Tensor


class Generator(Protocol):
    """What generation uses of a transformers model with a generation head, or of the peft
    model wrapping one (which forwards these attributes to it)."""

    config: PretrainedConfig
    generation_config: GenerationConfig

    # a ModelOutput, whose fields (logits, the cache, ...) depend on the model class
    def __call__(self, *args: object, **kwargs: object) -> Any: ...
    def generate(self, **kwargs: object) -> Tensor: ...  # no dict output: token ids
    def get_encoder(self) -> Model: ...
    def forward(self, *args: object, **kwargs: object) -> object: ...


IGNORE = -100  # the label of a position without loss (prompt, padding)


def pad_rows(rows: list[list[int]], value: int, left: bool = False) -> torch.Tensor:
    """Pad token-id lists into one tensor (right, or left for decoder-only prompts)."""
    import torch

    width = max(len(r) for r in rows)
    out = torch.full((len(rows), width), value, dtype=torch.long)
    for i, row in enumerate(rows):
        if row:
            values = torch.tensor(row, dtype=torch.long)
            if left:
                out[i, width - len(row) :] = values
            else:
                out[i, : len(row)] = values
    return out


def keep_from_first_label(labels: torch.Tensor) -> int:
    """How many trailing positions hold every label of the batch, plus the one before the
    first label (its logit predicts that label): the `logits_to_keep` of a decoder."""
    labelled = (labels != IGNORE).any(dim=0).nonzero()
    first = int(labelled[0]) if labelled.numel() else labels.shape[1] - 1
    return labels.shape[1] - max(first - 1, 0)


def example_mean_losses(logits: torch.Tensor, labels: torch.Tensor) -> list[float]:
    """Mean token cross-entropy of each row over its labelled positions (logits[:, j] scored
    against labels[:, j]): the eval loss of every generation path, one definition."""
    import torch

    flat = torch.nn.functional.cross_entropy(
        logits.float().reshape(-1, logits.shape[-1]),
        labels.reshape(-1),
        ignore_index=IGNORE,
        reduction="none",
    ).view(labels.shape)
    counts = (labels != IGNORE).sum(dim=1).clamp(min=1)
    return (flat.sum(dim=1) / counts).tolist()


def mask_rows(rows: list[list[int]], left: bool = False) -> torch.Tensor:
    return pad_rows([[1] * len(r) for r in rows], 0, left=left)


def trim_padding(
    ids: torch.Tensor, mask: torch.Tensor, left: bool
) -> tuple[torch.Tensor, torch.Tensor]:
    """Drop columns that are padding in every row (a sub-batch may be shorter than its batch)."""
    width = int(mask.sum(dim=1).max())
    if left:
        return ids[:, ids.shape[1] - width :], mask[:, mask.shape[1] - width :]
    return ids[:, :width], mask[:, :width]


def slice_encoded(encoded: BaseModelOutput, rows: slice, width: int) -> BaseModelOutput:
    """The encoder output of a sub-batch, cut to its own (trimmed) input width."""
    from transformers.modeling_outputs import BaseModelOutput

    hidden = encoded.last_hidden_state
    assert hidden is not None, "an encoder output always has its last hidden state"
    return BaseModelOutput(last_hidden_state=hidden[rows, :width])


def token_ids(labels: list[int] | float) -> list[int]:
    """A generation feature's labels: its target's token ids (never a class id)."""
    assert isinstance(labels, list), "a generation feature's labels are token ids"
    return labels


def unwrap_parallel(model: Model | Generator) -> Generator:
    """DistributedDataParallel hides `generate`; peft and plain models expose it directly."""
    from torch.nn.parallel import DistributedDataParallel

    inner = model.module if isinstance(model, DistributedDataParallel) else model
    return cast("Generator", inner)  # a generation task's model: a transformers or peft one


def feeds_virtual_tokens(model: Model | Generator) -> bool:
    """Whether peft prepends virtual tokens (prompt learning) to every input of this model:
    then neither an encoder pass nor a prompt cache can be shared with `generate`."""
    peft_config = getattr(unwrap_parallel(model), "active_peft_config", None)
    return bool(getattr(peft_config, "is_prompt_learning", False))
