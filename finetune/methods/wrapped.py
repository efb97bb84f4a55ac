"""The model a peft method works on, typed as what it is.

Methods take and return `Model` (torch's Module) in their shared interface, but the model a
peft method applied or loaded is peft's `PeftModel`, whose `save_pretrained`, `set_adapter`
and `merge_and_unload` they call. peft's classes are used in annotations only, so this module
imports nothing at run time.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, cast

if TYPE_CHECKING:  # pragma: no cover
    from peft import PeftModel

    from finetune.types import Model


def peft_model(model: Model) -> PeftModel:
    """The model a peft method wrapped or loaded: peft's own PeftModel (typed as one here)."""
    return cast("PeftModel", model)


def transformers_model(model: object) -> Any:
    """The transformers model under a peft wrapper, or the model itself: where a model's config,
    forward signature, heads and attention setting live."""
    get_base = getattr(model, "get_base_model", None)
    return get_base() if callable(get_base) else model
