"""Names for the torch, transformers and accelerate objects finetune passes around.

Used in annotations only (`if TYPE_CHECKING: from finetune.types import Model`), so that the
type checker sees the real classes while `finetune --help` and `validate` never import torch.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:  # pragma: no cover
    from accelerate import Accelerator as Accelerator
    from torch import Tensor as Tensor
    from torch.nn import Module as Model
    from torch.optim import Optimizer as Optimizer
    from torch.optim.lr_scheduler import LRScheduler as Scheduler
    from torch.utils.data import DataLoader as DataLoader
    from transformers import PreTrainedModel as PretrainedModel
    from transformers import PreTrainedTokenizerBase as Tokenizer

__all__ = [
    "Accelerator",
    "DataLoader",
    "Model",
    "Optimizer",
    "PretrainedModel",
    "Scheduler",
    "Tensor",
    "Tokenizer",
]
