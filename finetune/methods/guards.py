"""Silent-failure guards: a run that would train nothing, or train the frozen backbone, stops.

Each of these mistakes otherwise looks like a normal run with bad numbers at the end: a
`target_modules` that matches nothing trains only the head, a method that forgets to freeze
trains the whole backbone, a save that drops the adapter ships the base model.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING

from finetune.errors import FinetuneError
from finetune.methods.base import inside
from finetune.run.layout import ADAPTER_CONFIG, ADAPTER_WEIGHTS

if TYPE_CHECKING:  # pragma: no cover
    from finetune.methods.base import Method
    from finetune.types import JSON, Model


def check_trainable(
    model: Model, method: Method, new_modules: list[str], config: object = None
) -> None:
    """Refuse to train when nothing trains, when the method itself trains nothing beyond the
    new modules, or when backbone parameters the method does not own would train."""
    method_name = method.name
    trainable = [n for n, p in model.named_parameters() if p.requires_grad]
    if not trainable:
        raise FinetuneError(
            f"method {method_name}: no parameter is trainable, the run would learn nothing",
            fix="check method.target_modules matches module names of this model",
        )
    if method.trains_backbone:
        return
    if config is None:
        config = _peft_config(model)
    own = [n for n in trainable if not inside(n, new_modules) and "modules_to_save" not in n]
    if not any(method.owns_parameter(n, config) for n in own):
        raise FinetuneError(
            f"method {method_name}: only the new modules ({', '.join(new_modules) or 'none'}) "
            "would train; the method added no trainable parameter of its own",
            fix="check method.target_modules / method.layers match this model's modules",
        )
    leaked = [n for n in own if not method.owns_parameter(n, config)]
    if leaked:
        raise FinetuneError(
            f"method {method_name}: {len(leaked)} backbone parameters would train "
            f"(e.g. {leaked[0]}); the base model must stay frozen",
            fix="this is a bug in the method; use method.name=full to train everything",
        )


def _peft_config(model: Model) -> object:
    """The active peft config of a PeftModel (its LoRA `bias` option), else None."""
    configs = getattr(model, "peft_config", None)
    if isinstance(configs, dict) and configs:
        return configs.get(getattr(model, "active_adapter", "default")) or next(
            iter(configs.values())
        )
    return None


def saved_new_modules(config: Mapping[str, JSON]) -> list[str]:
    """New modules recorded in an adapter_config.json (peft's or ours)."""
    found = config.get("modules_to_save") or config.get("new_modules") or []
    return [str(name) for name in found] if isinstance(found, list) else []


def check_saved_adapter(out_dir: Path, method_name: str) -> None:
    """A saved adapter must hold adapter tensors, not just the head (or nothing at all)."""
    from safetensors import safe_open

    from finetune.methods.base import inside

    weights = out_dir / ADAPTER_WEIGHTS
    config_path = out_dir / ADAPTER_CONFIG
    if not weights.exists() or not config_path.exists():
        raise FinetuneError(
            f"method {method_name}: the save wrote no {ADAPTER_WEIGHTS} + adapter_config.json "
            f"in {out_dir}",
            fix="this is a bug in the method's save; please report it",
        )
    new_modules = saved_new_modules(json.loads(config_path.read_text(encoding="utf-8")))
    with safe_open(str(weights), framework="pt") as handle:
        keys = list(handle.keys())
    adapter = [k for k in keys if not inside(_strip_peft_prefix(k), new_modules)]
    if not adapter:
        raise FinetuneError(
            f"method {method_name}: the saved adapter in {out_dir} holds no adapter tensors "
            f"({len(keys)} tensors, all of them new modules)",
            fix="this is a bug in the method's save; please report it",
        )


def _strip_peft_prefix(key: str) -> str:
    for prefix in ("base_model.model.", "base_model."):
        if key.startswith(prefix):
            return key[len(prefix) :]
    return key
