"""Memory levers: gradient checkpointing and k-bit (QLoRA) base models.

Gradient checkpointing recomputes each layer's activations in the backward pass instead of
keeping them. It is switched on the transformers model itself (layers are
`GradientCheckpointingLayer`s), so it works the same under peft, the bottleneck adapters and
full fine-tuning. The non-reentrant variant (`use_reentrant=False`) is used: the reentrant one
returns no gradient when none of a checkpointed block's *inputs* requires grad, which is exactly
the frozen-backbone case (LoRA, adapters) and silently trains nothing; `enable_input_require_grads`
is added as well, the belt to the braces, for code that still calls the reentrant form.

Quantisation loads the frozen base in 4-bit NF4 or 8-bit through bitsandbytes (QLoRA: double
quantisation, bf16 compute) and prepares it with peft's `prepare_model_for_kbit_training`. It
needs CUDA and bitsandbytes; `hardware_problems` says so before any weight loads, so `validate`
and `run` exit 2 with that message instead of a traceback from deep inside bitsandbytes.
"""

from __future__ import annotations

import importlib.util
import logging
from typing import TYPE_CHECKING

from finetune.errors import Problem

if TYPE_CHECKING:  # pragma: no cover
    from transformers import BitsAndBytesConfig

    from finetune.types import Model, PretrainedModel

log = logging.getLogger(__name__)

QLORA_INSTALL = 'pip install -e ".[gpu]" (bitsandbytes>=0.43) on a machine with a CUDA GPU'


def enable_gradient_checkpointing(model: Model) -> None:
    """Checkpoint every layer of the transformers model inside `model` (peft-wrapped or not)."""
    base = transformers_model(model)
    kwargs = {"use_reentrant": False}
    if hasattr(base, "activation_checkpointing_enable"):  # transformers >= 5.x
        base.activation_checkpointing_enable(activation_checkpointing_kwargs=kwargs)
    else:  # pragma: no cover - older transformers
        base.gradient_checkpointing_enable(gradient_checkpointing_kwargs=kwargs)
    if hasattr(base, "enable_input_require_grads"):
        base.enable_input_require_grads()
    config = getattr(base, "config", None)
    if config is not None and getattr(config, "use_cache", None):
        config.use_cache = False  # a cache is useless in training and conflicts with recompute


def transformers_model(model: Model) -> PretrainedModel:
    """The outermost transformers `PreTrainedModel` in `model` (peft wraps it twice)."""
    from transformers import PreTrainedModel

    for module in model.modules():
        if isinstance(module, PreTrainedModel):
            return module
    raise TypeError(f"no transformers model inside {type(model).__name__}")


def hardware_problems(key: str) -> list[Problem]:
    """CUDA and bitsandbytes present, or the reason they are not."""
    problems = []
    if importlib.util.find_spec("bitsandbytes") is None:
        problems.append(
            Problem(
                key,
                "quantisation needs the bitsandbytes package, which is not installed",
                QLORA_INSTALL,
            )
        )
    import torch

    if not torch.cuda.is_available():
        problems.append(
            Problem(
                key,
                "quantisation needs a CUDA GPU (bitsandbytes k-bit kernels) and this machine has "
                "none",
                "remove model.quantization to train in full precision here, or run on a GPU",
            )
        )
    return problems


def bitsandbytes_config(bits: int) -> BitsAndBytesConfig:
    """QLoRA's settings: NF4 with double quantisation and bf16 compute, or LLM.int8()."""
    import torch
    from transformers import BitsAndBytesConfig

    if bits == 4:
        return BitsAndBytesConfig(
            load_in_4bit=True,
            bnb_4bit_quant_type="nf4",
            bnb_4bit_use_double_quant=True,
            bnb_4bit_compute_dtype=torch.bfloat16,
        )
    return BitsAndBytesConfig(load_in_8bit=True)


def prepare_kbit(model: PretrainedModel, gradient_checkpointing: bool) -> PretrainedModel:
    """peft's k-bit preparation: norms and head in fp32, input grads, optional checkpointing.
    It changes the model in place and returns it."""
    from peft import prepare_model_for_kbit_training

    prepared: PretrainedModel = prepare_model_for_kbit_training(
        model,
        use_gradient_checkpointing=gradient_checkpointing,
        gradient_checkpointing_kwargs={"use_reentrant": False},
    )
    return prepared
