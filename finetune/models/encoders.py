"""Encoder rows of the architecture table (the BERT family): classification, and generation
as bert2bert where transformers has a causal LM with cross-attention for the encoder.

LoRA/IA3 targets start from peft's per-model mapping (peft.utils.constants); the bottleneck
sites were read off each model's module tree in the installed transformers (see
Architecture's docstring for what each regex must name).
"""

from __future__ import annotations

from typing import TypedDict

from finetune.models.architecture import NO_BERT2BERT, AdapterSites, Architecture

GENERATES_NOT = {"seq2seq": NO_BERT2BERT}  # encoders without a cross-attention causal LM


# BERT's layer: attention.output.{dense,dropout,LayerNorm}, output.{dense,dropout,LayerNorm}
class _PostLNSites(AdapterSites):
    post_ln: bool


class _IA3Targets(TypedDict):
    ia3_targets: tuple[str, ...]
    ia3_feedforward: tuple[str, ...]


_BERT_SITES: _PostLNSites = {
    "attention_output": r"layer\.(\d+)\.attention\.output\.dropout$",
    "ffn_output": r"layer\.(\d+)\.output\.dropout$",
    "ffn_stream": r"layer\.(\d+)\.output\.LayerNorm$",
    "post_ln": True,
}
_BERT_IA3: _IA3Targets = {
    "ia3_targets": ("key", "value", "output.dense"),
    "ia3_feedforward": ("output.dense",),
}
_BERT_MLP = ("intermediate.dense", "output.dense")


def _bert_like(
    model_type: str, display: str, heads: tuple[str, ...] = ("classifier",)
) -> Architecture:
    """BERT's module layout under another name (RoBERTa, XLM-R, ELECTRA, CamemBERT)."""
    return Architecture(
        model_type=model_type,
        shape="encoder",
        display=display,
        lora_targets=("query", "value"),
        mlp_modules=_BERT_MLP,
        head_modules=heads,
        **_BERT_IA3,
        **_BERT_SITES,
    )


ENCODERS = [
    # the "bert" entry also serves `model.family: bert` overrides of DistilBERT checkpoints
    Architecture(
        model_type="bert",
        shape="encoder",
        display="BERT",
        lora_targets=("query", "value", "q_lin", "v_lin"),
        mlp_modules=(*_BERT_MLP, "lin1", "lin2"),
        ia3_targets=("key", "value", "output.dense", "k_lin", "v_lin", "lin2"),
        ia3_feedforward=("output.dense", "lin2"),
        head_modules=("classifier", "pre_classifier"),
        # DistilBERT has no dropout after out_lin: its output goes straight to the residual add
        attention_output=r"layer\.(\d+)\.attention\.(?:output\.dropout|out_lin)$",
        ffn_output=r"layer\.(\d+)\.(?:output|ffn)\.dropout$",
        ffn_stream=r"layer\.(\d+)\.(?:output\.LayerNorm|output_layer_norm)$",
        post_ln=True,
    ),
    _bert_like("roberta", "RoBERTa"),
    _bert_like("xlm-roberta", "XLM-RoBERTa"),
    _bert_like("camembert", "CamemBERT"),
    _bert_like("electra", "ELECTRA"),
    Architecture(
        model_type="deberta",
        unsupported_kinds=GENERATES_NOT,
        shape="encoder",
        display="DeBERTa",
        lora_targets=("in_proj",),  # fused q/k/v
        mlp_modules=_BERT_MLP,
        ia3_targets=("in_proj", "output.dense"),
        ia3_feedforward=("output.dense",),
        head_modules=("pooler", "classifier"),
        **_BERT_SITES,
    ),
    Architecture(
        model_type="deberta-v2",
        unsupported_kinds=GENERATES_NOT,
        shape="encoder",
        display="DeBERTa-v2/v3",
        lora_targets=("query_proj", "value_proj"),
        mlp_modules=_BERT_MLP,
        ia3_targets=("key_proj", "value_proj", "output.dense"),
        ia3_feedforward=("output.dense",),
        head_modules=("pooler", "classifier"),
        **_BERT_SITES,
    ),
    Architecture(
        model_type="distilbert",
        unsupported_kinds=GENERATES_NOT,
        shape="encoder",
        display="DistilBERT",
        lora_targets=("q_lin", "v_lin"),
        mlp_modules=("lin1", "lin2"),
        ia3_targets=("k_lin", "v_lin", "lin2"),
        ia3_feedforward=("lin2",),
        head_modules=("pre_classifier", "classifier"),
        attention_output=r"layer\.(\d+)\.attention\.out_lin$",  # no dropout after out_lin
        ffn_output=r"layer\.(\d+)\.ffn\.dropout$",
        ffn_stream=r"layer\.(\d+)\.output_layer_norm$",
        post_ln=True,
    ),
    Architecture(
        model_type="albert",
        unsupported_kinds=GENERATES_NOT,
        shape="encoder",
        display="ALBERT",
        lora_targets=("query", "value"),
        mlp_modules=("ffn", "ffn_output"),
        ia3_targets=("key", "value", "ffn_output"),
        ia3_feedforward=("ffn_output",),
        head_modules=("classifier",),
        attention_output=r"albert_layers\.(\d+)\.attention\.output_dropout$",
        ffn_output=r"albert_layers\.(\d+)\.ffn_output$",
        ffn_stream=r"albert_layers\.(\d+)\.full_layer_layer_norm$",
        post_ln=True,
        bottleneck_note="ALBERT repeats one shared layer, so its adapters are shared too",
    ),
    Architecture(
        model_type="mpnet",
        unsupported_kinds=GENERATES_NOT,
        shape="encoder",
        display="MPNet",
        lora_targets=("q", "v"),
        mlp_modules=_BERT_MLP,
        ia3_targets=("k", "v", "output.dense"),
        ia3_feedforward=("output.dense",),
        head_modules=("classifier",),
        attention_output=r"layer\.(\d+)\.attention\.dropout$",
        ffn_output=r"layer\.(\d+)\.output\.dropout$",
        ffn_stream=r"layer\.(\d+)\.output\.LayerNorm$",
        post_ln=True,
    ),
    Architecture(
        model_type="modernbert",
        unsupported_kinds=GENERATES_NOT,
        shape="encoder",
        display="ModernBERT",
        lora_targets=("Wqkv",),
        mlp_modules=("mlp.Wi", "mlp.Wo"),
        ia3_targets=("Wqkv", "mlp.Wo"),
        ia3_feedforward=("mlp.Wo",),
        head_modules=("head", "classifier"),
        attention_output=r"layers\.(\d+)\.attn$",
        ffn_output=r"layers\.(\d+)\.mlp$",
        ffn_stream=r"layers\.(\d+)$",
        has_biases=False,
    ),
]
