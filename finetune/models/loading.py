"""Loading tokenizers and base models for a (family, task) pair, with clear errors.

Which Auto class a task needs is decided here from the task's model kind; which modules are new
(randomly initialised: the classification head, bert2bert cross-attention) comes from the
loading report, so every method can train and save them without knowing their names.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import TYPE_CHECKING

from finetune.errors import ModelError
from finetune.models.activations import fuse_gelu
from finetune.models.pretrained import (
    LOAD_DTYPE,
    LoadedModel,
    load_failure,
    modules_from_keys,
    quiet_transformers,
)

if TYPE_CHECKING:  # pragma: no cover
    from finetune.models.architecture import Architecture
    from finetune.models.names import ResolvedModel
    from finetune.types import Tokenizer

log = logging.getLogger(__name__)

AUTO_CLASSES = {
    "classification": "AutoModelForSequenceClassification",
    "seq2seq": "AutoModelForSeq2SeqLM",
    "causal": "AutoModelForCausalLM",
}


def load_tokenizer(name_or_path: str, revision: str | None = None) -> Tokenizer:
    from transformers import AutoTokenizer

    quiet_transformers()
    try:
        tokenizer = AutoTokenizer.from_pretrained(name_or_path, revision=revision)
    except (OSError, ValueError) as exc:
        raise load_failure(name_or_path, exc) from None
    if tokenizer.pad_token is None:
        # GPT-2 ships without a pad token; EOS is the standard stand-in (masked out anyway)
        tokenizer.pad_token = tokenizer.eos_token or tokenizer.unk_token
    return tokenizer


def load_base_model(
    resolved: ResolvedModel,
    arch: Architecture,
    kind: str,
    tokenizer: Tokenizer,
    revision: str | None = None,
    config_overrides: Mapping[str, object] | None = None,  # from_pretrained's config kwargs
    quantization_bits: int | None = None,
) -> LoadedModel:
    import transformers

    quiet_transformers()
    overrides: dict[str, object] = dict(config_overrides or {})
    if quantization_bits is not None:
        overrides.update(kbit_loading(quantization_bits))
    if arch.shape == "encoder" and kind != "classification":
        from finetune.models.bert2bert import load_bert2bert

        if quantization_bits is not None:
            raise ModelError(
                "model.quantization: a bert2bert model is assembled from two encoders and cannot "
                "be loaded k-bit",
                fix="remove model.quantization, or use a T5 or GPT-2 model for generation",
            )

        return load_bert2bert(resolved, tokenizer, revision)
    auto = getattr(transformers, AUTO_CLASSES[kind])
    try:
        model, info = auto.from_pretrained(
            resolved.path,
            revision=revision,
            output_loading_info=True,
            dtype=LOAD_DTYPE,
            **overrides,
        )
    except (OSError, ValueError, KeyError) as exc:
        raise load_failure(resolved.name, exc) from None
    if getattr(model.config, "pad_token_id", None) is None:
        model.config.pad_token_id = tokenizer.pad_token_id
    fuse_gelu(model)
    new = modules_from_keys(list(info.get("missing_keys", [])))
    if kind == "classification":
        names = {n.rsplit(".", 1)[-1] for n, _ in model.named_modules()}
        new += [h for h in arch.head_modules if h in names and h not in new]
        new = [m for m in new if not any(m.startswith(h + ".") for h in new if h != m)]
    commit = getattr(model.config, "_commit_hash", None)
    return LoadedModel(model=model, new_modules=new, revision=revision or commit)


def kbit_loading(bits: int) -> dict[str, object]:
    """from_pretrained arguments for a bitsandbytes k-bit base on this process's GPU (each
    process of a multi-GPU run loads its own copy on its own device)."""
    import os

    from finetune.models.memory import bitsandbytes_config

    device = int(os.environ.get("LOCAL_RANK", "0"))
    return {"quantization_config": bitsandbytes_config(bits), "device_map": {"": device}}
