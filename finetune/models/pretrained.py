"""What every from_pretrained of a base model shares: the dtype weights load in, quiet
transformers logging, one error for a model that cannot load, the names of newly initialised
modules, and the `LoadedModel` result. Shared by loading.py and bert2bert.py."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from finetune.errors import ModelError, first_line
from finetune.models.help import model_help

if TYPE_CHECKING:  # pragma: no cover
    from finetune.types import PretrainedModel

# transformers 5 loads in the stored dtype: a bf16/fp16 checkpoint would train its parameters
# in pure half precision under AdamW (and fp16 ones crash the grad scaler). Weights are loaded
# in fp32 whatever the checkpoint holds; train.precision=bf16/fp16 is autocast on top.
LOAD_DTYPE = "float32"


@dataclass
class LoadedModel:
    model: PretrainedModel
    new_modules: list[str] = field(default_factory=list)
    revision: str | None = None


def quiet_transformers() -> None:
    """transformers' load reports and advisory warnings would drown our own log."""
    import transformers

    transformers.logging.set_verbosity_error()
    transformers.logging.disable_progress_bar()


def load_failure(name: str, exc: Exception) -> ModelError:
    first = first_line(exc)
    return ModelError(
        f"model.name: cannot load {name!r}: {first[:300]}",
        fix="check the hub id (offline? HF_HUB_OFFLINE is set or there is no network: run once "
        "with network to fill the cache); " + model_help(),
    )


def modules_from_keys(keys: list[str]) -> list[str]:
    """Parameter names -> their owning module names, without duplicates or nesting."""
    modules: list[str] = []
    for key in keys:
        module = re.sub(r"\.(weight|bias|[A-Za-z_]+_(?:weight|bias))$", "", key)
        if module and module not in modules:
            modules.append(module)
    return [m for m in modules if not any(m.startswith(o + ".") for o in modules if o != m)]
