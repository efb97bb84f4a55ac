"""The architecture table: one `Architecture` per supported `config.model_type`.

Closed and table-driven: adding an architecture is one entry here (plus its tiny fixture in
tests/tiny_models.py); nothing else in finetune names a model_type. LoRA/IA3 targets start from
peft's per-model mapping (peft.utils.constants); the bottleneck sites were read off each
model's module tree in the installed transformers (see Architecture's docstring for what each
regex must name).
"""

from __future__ import annotations

from typing import Any

from finetune.models.spec import NO_BERT2BERT, NO_SEQUENCE_CLASSIFIER, Architecture

GENERATES_NOT = {"seq2seq": NO_BERT2BERT}  # encoders without a cross-attention causal LM

# --------------------------------------------------------------------------- encoders (BERT)

# BERT's layer: attention.output.{dense,dropout,LayerNorm}, output.{dense,dropout,LayerNorm}
_BERT_SITES: dict[str, Any] = {
    "attention_output": r"layer\.(\d+)\.attention\.output\.dropout$",
    "ffn_output": r"layer\.(\d+)\.output\.dropout$",
    "ffn_stream": r"layer\.(\d+)\.output\.LayerNorm$",
    "post_ln": True,
}
_BERT_IA3: dict[str, Any] = {
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
        architecture="encoder",
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
        architecture="encoder",
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
        architecture="encoder",
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
        architecture="encoder",
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
        architecture="encoder",
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
        architecture="encoder",
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
        architecture="encoder",
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
        architecture="encoder",
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

# --------------------------------------------------------------------------- decoders (GPT-2)

_LLAMA_MLP = ("gate_proj", "up_proj", "down_proj")
_PRE_LN_DECODER: dict[str, Any] = {
    "attention_output": r"layers\.(\d+)\.self_attn$",
    "ffn_output": r"layers\.(\d+)\.mlp$",
    "ffn_stream": r"layers\.(\d+)$",
}


def _llama_like(model_type: str, display: str, has_biases: bool = False) -> Architecture:
    """Llama's layout: self_attn.{q,k,v,o}_proj, mlp.{gate,up,down}_proj, RMSNorm, pre-LN."""
    return Architecture(
        model_type=model_type,
        architecture="decoder",
        display=display,
        lora_targets=("q_proj", "v_proj"),
        mlp_modules=_LLAMA_MLP,
        ia3_targets=("k_proj", "v_proj", "down_proj"),
        ia3_feedforward=("down_proj",),
        head_modules=("score",),
        has_biases=has_biases,
        **_PRE_LN_DECODER,
    )


DECODERS = [
    Architecture(
        model_type="gpt2",
        architecture="decoder",
        display="GPT-2",
        lora_targets=("c_attn",),
        mlp_modules=("c_fc", "mlp.c_proj"),
        ia3_targets=("c_attn", "mlp.c_proj"),
        ia3_feedforward=("mlp.c_proj",),
        head_modules=("score",),
        attention_output=r"\bh\.(\d+)\.attn\.resid_dropout$",
        ffn_output=r"\bh\.(\d+)\.mlp\.dropout$",
        ffn_stream=r"\bh\.(\d+)$",  # the block ends with the feed-forward residual add
    ),
    Architecture(
        model_type="gpt_neo",
        architecture="decoder",
        display="GPT-Neo",
        lora_targets=("q_proj", "v_proj"),
        mlp_modules=("c_fc", "c_proj"),
        ia3_targets=("k_proj", "v_proj", "c_proj"),
        ia3_feedforward=("c_proj",),
        head_modules=("score",),
        attention_output=r"\bh\.(\d+)\.attn\.attention\.resid_dropout$",
        ffn_output=r"\bh\.(\d+)\.mlp\.dropout$",
        ffn_stream=r"\bh\.(\d+)$",
    ),
    Architecture(
        model_type="gpt_neox",
        architecture="decoder",
        display="GPT-NeoX / Pythia",
        lora_targets=("query_key_value",),
        mlp_modules=("dense_h_to_4h", "dense_4h_to_h"),
        ia3_targets=("query_key_value", "dense_4h_to_h"),
        ia3_feedforward=("dense_4h_to_h",),
        head_modules=("score",),
        attention_output=r"layers\.(\d+)\.post_attention_dropout$",
        ffn_output=r"layers\.(\d+)\.post_mlp_dropout$",
        ffn_stream=r"layers\.(\d+)$",
    ),
    Architecture(
        model_type="opt",
        architecture="decoder",
        display="OPT",
        lora_targets=("q_proj", "v_proj"),
        mlp_modules=("fc1", "fc2"),
        ia3_targets=("k_proj", "v_proj", "fc2"),
        ia3_feedforward=("fc2",),
        head_modules=("score",),
        # OPT's dropout is functional: the adapters read self_attn / fc2 just before it
        attention_output=r"layers\.(\d+)\.self_attn$",
        ffn_output=r"layers\.(\d+)\.fc2$",
        ffn_stream=r"layers\.(\d+)$",
        bottleneck_note="pre-LN placement; OPT-350m alone is post-LN",
    ),
    Architecture(
        model_type="bloom",
        architecture="decoder",
        display="BLOOM",
        lora_targets=("query_key_value",),
        mlp_modules=("dense_h_to_4h", "dense_4h_to_h"),
        ia3_targets=("query_key_value", "mlp.dense_4h_to_h"),
        ia3_feedforward=("mlp.dense_4h_to_h",),
        head_modules=("score",),
        # BLOOM adds the residual inside the attention/MLP module: adapt the last projection
        attention_output=r"\bh\.(\d+)\.self_attention\.dense$",
        ffn_output=r"\bh\.(\d+)\.mlp\.dense_4h_to_h$",
        ffn_stream=r"\bh\.(\d+)$",
    ),
    _llama_like("llama", "Llama / SmolLM"),
    _llama_like("mistral", "Mistral"),
    _llama_like("qwen2", "Qwen2 / Qwen2.5", has_biases=True),  # q/k/v carry biases
    _llama_like("qwen3", "Qwen3"),
    _llama_like("gemma", "Gemma"),
    Architecture(
        model_type="gemma2",
        architecture="decoder",
        display="Gemma 2",
        lora_targets=("q_proj", "v_proj"),
        mlp_modules=_LLAMA_MLP,
        ia3_targets=("k_proj", "v_proj", "down_proj"),
        ia3_feedforward=("down_proj",),
        head_modules=("score",),
        # Gemma 2 normalises each sub-layer's output before the residual add
        attention_output=r"layers\.(\d+)\.post_attention_layernorm$",
        ffn_output=r"layers\.(\d+)\.post_feedforward_layernorm$",
        ffn_stream=r"layers\.(\d+)$",
        has_biases=False,
    ),
    Architecture(
        model_type="phi",
        architecture="decoder",
        display="Phi-1/2",
        lora_targets=("q_proj", "v_proj"),
        mlp_modules=("fc1", "fc2"),
        ia3_targets=("k_proj", "v_proj", "fc2"),
        ia3_feedforward=("fc2",),
        head_modules=("score",),
        # parallel attention and MLP share one resid_dropout module: adapt each branch
        **_PRE_LN_DECODER,
    ),
    Architecture(
        model_type="phi3",
        architecture="decoder",
        display="Phi-3",
        lora_targets=("qkv_proj",),
        mlp_modules=("gate_up_proj", "down_proj"),
        ia3_targets=("qkv_proj", "down_proj"),
        ia3_feedforward=("down_proj",),
        head_modules=("score",),
        attention_output=r"layers\.(\d+)\.resid_attn_dropout$",
        ffn_output=r"layers\.(\d+)\.resid_mlp_dropout$",
        ffn_stream=r"layers\.(\d+)$",
        has_biases=False,
    ),
    _llama_like("olmo", "OLMo"),
]

# --------------------------------------------------------------------------- encoder-decoders (T5)

_T5_SITES: dict[str, Any] = {
    # the feed-forward sub-layer is layer.1 of an encoder block, layer.2 of a decoder block
    # (layer.1 there is cross-attention)
    "attention_output": r"block\.(\d+)\.layer\.0\.dropout$",
    "ffn_output": r"(?:encoder\.block\.(\d+)\.layer\.1|decoder\.block\.(\d+)\.layer\.2)\.dropout$",
    "ffn_stream": r"(?:encoder\.block\.(\d+)\.layer\.1|decoder\.block\.(\d+)\.layer\.2)$",
}


def _t5_like(model_type: str, display: str, prefix: bool) -> Architecture:
    return Architecture(
        model_type=model_type,
        architecture="encoder-decoder",
        display=display,
        lora_targets=("q", "v"),
        mlp_modules=("wi", "wi_0", "wi_1", "wo"),
        ia3_targets=("k", "v", "wo"),
        ia3_feedforward=("wo",),
        head_modules=("classification_head",),
        has_biases=False,
        task_prefix=prefix,
        **_T5_SITES,
    )


def _bart_like(
    model_type: str, display: str, post_ln: bool, classifies: bool = True, **extra: Any
) -> Architecture:
    """BART's layout: {encoder,decoder}.layers.N.{self_attn,fc1,fc2,final_layer_norm}; the
    dropout after self_attn / fc2 is functional, so the adapters read those modules."""
    unsupported = {} if classifies else {"classification": NO_SEQUENCE_CLASSIFIER}
    return Architecture(
        model_type=model_type,
        architecture="encoder-decoder",
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
        **extra,
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

ARCHITECTURES: dict[str, Architecture] = {
    arch.model_type: arch for arch in (*ENCODERS, *DECODERS, *ENCODER_DECODERS)
}

# The product's three families, each named by its best-known member of a shape.
FAMILIES: dict[str, Architecture] = {name: ARCHITECTURES[name] for name in ("bert", "gpt2", "t5")}
