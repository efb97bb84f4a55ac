"""ARCHITECTURES: the closed registry of model architectures (config.json `model_type` -> row).

Closed and table-driven: adding an architecture is one `Architecture` row in encoders.py,
decoders.py or encoder_decoders.py (plus its tiny fixture in tests/tiny_archs.py); nothing else
in finetune names a model_type. Importing this package imports no torch.
"""

from __future__ import annotations

from finetune.models.architecture import Architecture
from finetune.models.decoders import DECODERS
from finetune.models.encoder_decoders import ENCODER_DECODERS
from finetune.models.encoders import ENCODERS

ARCHITECTURES: dict[str, Architecture] = {
    arch.model_type: arch for arch in (*ENCODERS, *DECODERS, *ENCODER_DECODERS)
}

# The product's three families, each named by its best-known member of a shape.
FAMILIES: dict[str, Architecture] = {name: ARCHITECTURES[name] for name in ("bert", "gpt2", "t5")}

__all__ = ["ARCHITECTURES", "FAMILIES", "Architecture"]
