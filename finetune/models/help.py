"""What every model error's fix says: the architectures finetune supports and how to add one.

A leaf of the models package (the table only), so loading, name resolution and detection can
all use it without importing each other.
"""

from __future__ import annotations

from finetune.models import ARCHITECTURES


def supported_text() -> str:
    """'encoder: bert, roberta, ...; decoder: ...; encoder-decoder: ...' from the table."""
    parts = []
    for shape in ("encoder", "decoder", "encoder-decoder"):
        types = [a.model_type for a in ARCHITECTURES.values() if a.shape == shape]
        parts.append(f"{shape} ({', '.join(types)})")
    return "; ".join(parts)


ADD_ONE = (
    "to add an architecture: one Architecture row in finetune/models/encoders.py, decoders.py "
    "or encoder_decoders.py plus its "
    "tiny fixture (CONTRIBUTING.md, 'Add a model architecture')"
)


def model_help() -> str:
    """The fix for every model problem: what is supported, and how to use a local copy."""
    return (
        f"supported architectures (config.json model_type): {supported_text()}; to use a local "
        "copy, set model.name to a directory written by save_pretrained (config.json, weights, "
        "tokenizer files)"
    )
