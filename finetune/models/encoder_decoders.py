"""Encoder-decoder rows of the architecture table (the T5 family).

LoRA/IA3 targets start from peft's per-model mapping (peft.utils.constants); the bottleneck
sites were read off each model's module tree in the installed transformers.
"""

from __future__ import annotations

from typing import Literal

from finetune.models.architecture import NO_SEQUENCE_CLASSIFIER, AdapterSites, Architecture

_T5_SITES: AdapterSites = {
    # the feed-forward sub-layer is layer.1 of an encoder block, layer.2 of a decoder block
    # (layer.1 there is cross-attention)
    "attention_output": r"block\.(\d+)\.layer\.0\.dropout$",
    "ffn_output": r"(?:encoder\.block\.(\d+)\.layer\.1|decoder\.block\.(\d+)\.layer\.2)\.dropout$",
    "ffn_stream": r"(?:encoder\.block\.(\d+)\.layer\.1|decoder\.block\.(\d+)\.layer\.2)$",
}


def _t5_like(model_type: str, display: str, prefix: bool) -> Architecture:
    return Architecture(
        model_type=model_type,
        shape="encoder-decoder",
        display=display,
        lora_targets=("q", "v"),
        mlp_modules=("wi", "wi_0", "wi_1", "wo"),
        ia3_targets=("k", "v", "wo"),
        ia3_feedforward=("wo",),
        head_modules=("classification_head",),
        has_biases=False,
        task_prefix=prefix,
        fp16_overflows=True,  # transformers#10830, #14189
        **_T5_SITES,
    )


def _bart_like(
    model_type: str,
    display: str,
    post_ln: bool,
    classifies: bool = True,
    language_codes: Literal["mbart"] | None = None,
) -> Architecture:
    """BART's layout: {encoder,decoder}.layers.N.{self_attn,fc1,fc2,final_layer_norm}; the
    dropout after self_attn / fc2 is functional, so the adapters read those modules."""
    unsupported = {} if classifies else {"classification": NO_SEQUENCE_CLASSIFIER}
    return Architecture(
        model_type=model_type,
        shape="encoder-decoder",
        display=display,
        lora_targets=("q_proj", "v_proj"),
        mlp_modules=("fc1", "fc2"),
        ia3_targets=("k_proj", "v_proj", "fc2"),
        ia3_feedforward=("fc2",),
        head_modules=("classification_head",),
        attention_output=r"layers\.(\d+)\.self_attn$",
        ffn_output=r"layers\.(\d+)\.fc2$",
        ffn_stream=r"layers\.(\d+)\.final_layer_norm$" if post_ln else r"layers\.(\d+)$",
        post_ln=post_ln,
        unsupported_kinds=unsupported,
        language_codes=language_codes,
    )


ENCODER_DECODERS = [
    _t5_like("t5", "T5 / Flan-T5", prefix=True),
    _t5_like("mt5", "mT5", prefix=False),
    _t5_like("umt5", "umT5", prefix=False),
    _bart_like("bart", "BART", post_ln=True),
    _bart_like("mbart", "mBART", post_ln=False, language_codes="mbart"),
    _bart_like("marian", "Marian", post_ln=True, classifies=False),
    _bart_like("pegasus", "Pegasus", post_ln=False, classifies=False),
]
