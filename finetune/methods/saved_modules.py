"""peft's `modules_to_save` copies (the task's new modules: heads, bert2bert cross-attention)
put back in place of their wrappers before a merge.

LoRA's merge does this itself; the generic tuners' `merge_and_unload` (LoHa, LoKr, VeRA,
OFT, ...) instead treats a wrapper as an adapted layer and copies its `.weight`, which fails for
any new module that is not one Linear (T5's classification head, BertAttention). With the
trained copies already in place, every tuner's merge sees only its own layers.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:  # pragma: no cover
    from finetune.types import Model


def unwrap_saved_modules(model: Model) -> None:
    """Replace every ModulesToSaveWrapper by its active adapter's trained copy, in place."""
    from peft.utils import ModulesToSaveWrapper

    wrappers = [
        (name, module)
        for name, module in model.named_modules()
        if isinstance(module, ModulesToSaveWrapper)
    ]
    for name, wrapper in wrappers:
        parent_name, _, child = name.rpartition(".")
        parent = model.get_submodule(parent_name) if parent_name else model
        active = str(wrapper.active_adapters[0]) if wrapper.active_adapters else ""
        replacement = wrapper.original_module
        if active in wrapper.modules_to_save:  # a ModuleDict: no .get
            replacement = wrapper.modules_to_save[active]
        setattr(parent, child, replacement)
