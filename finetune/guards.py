"""Silent-failure guards: a run that would train nothing, or train the frozen backbone, stops.

Both mistakes otherwise look like a normal run with bad numbers at the end.
"""

from __future__ import annotations

from typing import Any

from finetune.errors import FinetuneError
from finetune.methods import METHODS


def check_trainable(model: Any, method_name: str, new_modules: list[str]) -> None:
    trainable = [n for n, p in model.named_parameters() if p.requires_grad]
    if not trainable:
        raise FinetuneError(
            f"method {method_name}: no parameter is trainable, the run would learn nothing",
            fix="check method.target_modules matches module names of this model",
        )
    if method_name == "full":
        return
    method = METHODS[method_name]
    leaked = [
        n
        for n in trainable
        if not method.owns_parameter(n)
        and not any(f".{m}." in f".{n}" or n.startswith(m + ".") for m in new_modules)
    ]
    if leaked:
        raise FinetuneError(
            f"method {method_name}: {len(leaked)} backbone parameters would train "
            f"(e.g. {leaked[0]}); the base model must stay frozen",
            fix="this is a bug in the method; use method.name=full to train everything",
        )
