"""Which architecture a recipe's model is, offline, before any weight loads.

The model's config.json (a local directory, or the Hub cache) names its `model_type`, which
must be a row of the ARCHITECTURES table; a Hub id that is not cached is guessed from its name
(the first load then fails clearly if the guess was wrong). `model.family` overrides both.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

from finetune.errors import ModelError
from finetune.models import ARCHITECTURES, FAMILIES
from finetune.models.architecture import Architecture
from finetune.models.help import ADD_ONE, model_help
from finetune.models.names import model_config

if TYPE_CHECKING:  # pragma: no cover
    from finetune.recipe.sections import ModelConfig


def architecture_named(model_type: str) -> Architecture:
    """The row a run.json or `model.family` names (a model_type; bert/gpt2/t5 are ones)."""
    return ARCHITECTURES[model_type]


def _guess_from_name(name: str) -> Architecture | None:
    """A hub id that is not cached: guess from the name (run fails clearly if the guess is
    wrong, at the first load)."""
    lowered = name.lower().rsplit("/", 1)[-1]
    if "gpt2" in lowered or "distilgpt2" in lowered:
        return FAMILIES["gpt2"]
    if re.search(r"(^|[-_])(m?t5|flan-t5)", lowered):
        return ARCHITECTURES["mt5" if lowered.startswith("mt5") else "t5"]
    if any(key in lowered for key in ("bert", "roberta", "electra", "minilm")):
        return FAMILIES["bert"]
    return None


def detect_architecture(model: ModelConfig) -> Architecture:
    """The row of the recipe's model: `model.family` when set, else its config.json's
    model_type (offline), else a guess from a Hub id's name."""
    if model.family != "auto":
        return architecture_named(model.family)
    return architecture_of(model.name, model.revision)


def architecture_of(name: str, revision: str | None = None) -> Architecture:
    """The row a model name points at, from its config.json (offline; a GGUF bundle is not
    converted for this: its model_type is known), else guessed from a Hub id's name."""
    config = model_config(name, revision)
    if config is not None:
        model_type = str(config.get("model_type", ""))
        arch = ARCHITECTURES.get(model_type)
        if arch is None:
            raise ModelError(
                f"model.name: {name} is a {model_type!r} model, which finetune does not support",
                fix=model_help() + "; " + ADD_ONE,
            )
        return arch
    arch = _guess_from_name(name)
    if arch is None:
        raise ModelError(
            f"model.name: cannot tell the family of {name!r} offline",
            fix="if it is on the Hub, run once with network (or set model.family to its "
            "model_type, e.g. bert, gpt2, t5, llama); " + model_help(),
        )
    return arch
