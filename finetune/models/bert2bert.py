"""bert2bert: an EncoderDecoderModel warm-started from one BERT-family checkpoint.

An encoder-only checkpoint (BERT, MiniLM, RoBERTa...) cannot generate by itself. Following
Rothe et al. (2020), the same weights start both halves: the encoder as is, the decoder as a
causal LM with cross-attention added. The cross-attention blocks (and the LM head's transform
when the checkpoint has no MLM head) are new and randomly initialised, so they are reported as
`new_modules`: every method must train and save them, or the decoder never sees the input.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, cast

from finetune.models.pretrained import (
    LOAD_DTYPE,
    LoadedModel,
    load_failure,
    modules_from_keys,
    quiet_transformers,
)

if TYPE_CHECKING:  # pragma: no cover
    from transformers import AutoModel

    from finetune.models.names import ResolvedModel
    from finetune.types import PretrainedModel, Tokenizer

# whole new blocks, not their Linear/LayerNorm parts: one modules_to_save entry each
_NEW_BLOCK = re.compile(r"^(.*?(?:\.crossattention|\bpredictions\.transform))\.")
# the LM-head bias is zero-initialised and tied into the vocabulary projection (itself tied to the
# word embeddings): zero is the right start, and training it would copy the whole projection
_ZERO_INIT_BIAS = re.compile(r"(^|\.)predictions\.(decoder\.)?bias$")


def new_decoder_modules(missing_keys: list[str] | set[str]) -> list[str]:
    """Missing decoder parameters -> new module paths (whole cross-attention / head blocks)."""
    modules: list[str] = []
    rest: list[str] = []
    for key in sorted(missing_keys):
        match = _NEW_BLOCK.match(key)
        if match:
            if match.group(1) not in modules:
                modules.append(match.group(1))
        elif not _ZERO_INIT_BIAS.search(key):
            rest.append(key)
    modules += [m for m in modules_from_keys(rest) if m not in modules]
    return [f"decoder.{m}" for m in _sort_layers(modules)]


def _sort_layers(modules: list[str]) -> list[str]:
    """Layer 2 before layer 10: numeric order reads better in logs and run.json."""

    def key(name: str) -> list[int | str]:
        return [int(p) if p.isdigit() else p for p in name.split(".")]

    return sorted(modules, key=key)


def load_bert2bert(
    resolved: ResolvedModel, tokenizer: Tokenizer, revision: str | None
) -> LoadedModel:
    """EncoderDecoderModel from one encoder checkpoint, with CLS/SEP/PAD wired for generation."""
    from transformers import AutoModel, AutoModelForCausalLM, EncoderDecoderModel

    quiet_transformers()
    try:
        encoder = _encoder(AutoModel, resolved.path, revision)
        # output_loading_info: (model, {"missing_keys": [...], "unexpected_keys": [...], ...})
        loaded = AutoModelForCausalLM.from_pretrained(
            resolved.path,
            revision=revision,
            is_decoder=True,
            add_cross_attention=True,
            output_loading_info=True,
            dtype=LOAD_DTYPE,
        )
        decoder, info = cast("tuple[PretrainedModel, dict[str, list[str]]]", loaded)
    except (OSError, ValueError, KeyError) as exc:
        raise load_failure(resolved.name, exc) from None
    model = EncoderDecoderModel(encoder=encoder, decoder=decoder)
    start, end = _special_ids(tokenizer)
    for config in (model.config, model.generation_config):
        config.decoder_start_token_id = start
        config.bos_token_id = start
        config.eos_token_id = end
        config.pad_token_id = tokenizer.pad_token_id
    model.config.vocab_size = decoder.config.vocab_size
    commit = getattr(encoder.config, "_commit_hash", None)
    new = new_decoder_modules(info.get("missing_keys", []))
    return LoadedModel(model=model, new_modules=new, revision=revision or commit)


def _encoder(auto: type[AutoModel], path: str, revision: str | None) -> PretrainedModel:
    """The encoder half without its pooler (unused by generation) where it has one: ELECTRA's
    and XLM-R's constructors differ, and ELECTRA's refuses the argument."""
    try:
        return auto.from_pretrained(
            path, revision=revision, add_pooling_layer=False, dtype=LOAD_DTYPE
        )
    except TypeError:
        return auto.from_pretrained(path, revision=revision, dtype=LOAD_DTYPE)


def _special_ids(tokenizer: Tokenizer) -> tuple[int, int]:
    """(decoder start, end of sequence): [CLS]/[SEP] for BERT, <s>/</s> for RoBERTa."""
    start = tokenizer.cls_token_id
    if start is None:
        start = tokenizer.bos_token_id
    end = tokenizer.sep_token_id
    if end is None:
        end = tokenizer.eos_token_id
    if start is None or end is None:
        from finetune.errors import ModelError

        raise ModelError(
            "model.name: the tokenizer has no [CLS]/[SEP] (or <s>/</s>) tokens for bert2bert",
            fix="use a BERT-family tokenizer with cls and sep tokens",
        )
    return int(start), int(end)
