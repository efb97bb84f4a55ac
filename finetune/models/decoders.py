"""Decoder rows of the architecture table (the GPT-2 family): classification from the last
token, summarization and translation as prompt + target in one sequence.

LoRA/IA3 targets start from peft's per-model mapping (peft.utils.constants); the bottleneck
sites were read off each model's module tree in the installed transformers.
"""

from __future__ import annotations

from finetune.models.architecture import AdapterSites, Architecture

_LLAMA_MLP = ("gate_proj", "up_proj", "down_proj")
_PRE_LN_DECODER: AdapterSites = {
    "attention_output": r"layers\.(\d+)\.self_attn$",
    "ffn_output": r"layers\.(\d+)\.mlp$",
    "ffn_stream": r"layers\.(\d+)$",
}


def _llama_like(model_type: str, display: str, has_biases: bool = False) -> Architecture:
    """Llama's layout: self_attn.{q,k,v,o}_proj, mlp.{gate,up,down}_proj, RMSNorm, pre-LN."""
    return Architecture(
        model_type=model_type,
        shape="decoder",
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
        shape="decoder",
        display="GPT-2",
        lora_targets=("c_attn",),
        mlp_modules=("c_fc", "mlp.c_proj"),
        ia3_targets=("c_attn", "mlp.c_proj"),
        ia3_feedforward=("mlp.c_proj",),
        head_modules=("score",),
        attention_output=r"\bh\.(\d+)\.attn\.resid_dropout$",
        ffn_output=r"\bh\.(\d+)\.mlp\.dropout$",
        ffn_stream=r"\bh\.(\d+)$",  # the block ends with the feed-forward residual add
        conv1d_layers=True,
    ),
    Architecture(
        model_type="gpt_neo",
        shape="decoder",
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
        shape="decoder",
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
        shape="decoder",
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
        shape="decoder",
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
        shape="decoder",
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
        shape="decoder",
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
        shape="decoder",
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
