"""What finetune must know about one architecture (one `config.model_type`): the `Architecture`.

An entry is pure data, so the ARCHITECTURES table (finetune/models/__init__.py, rows in
encoders.py, decoders.py, encoder_decoders.py) reads as a table and `finetune models` and the
README can be generated from it. Three shapes are the product's families, each named by
its best-known member: encoder (BERT), decoder (GPT-2), encoder-decoder (T5).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal, TypedDict

Shape = Literal["encoder", "decoder", "encoder-decoder"]
SHAPE_FAMILY: dict[str, str] = {"encoder": "bert", "decoder": "gpt2", "encoder-decoder": "t5"}

NO_BERT2BERT = (
    "transformers has no causal LM with cross-attention for this encoder, so bert2bert cannot "
    "warm-start a decoder from it; use an encoder-decoder (T5, BART) or a decoder"
)
NO_SEQUENCE_CLASSIFIER = (
    "transformers has no sequence-classification head for this encoder-decoder; use an encoder "
    "(DeBERTa-v3, RoBERTa) or a decoder for classification"
)


class AdapterSites(TypedDict):
    """The module-name regexes of a layout's bottleneck sites (the `Architecture` fields of
    the same names), shared by the rows of one layout as `**sites`."""

    attention_output: str
    ffn_output: str
    ffn_stream: str


@dataclass(frozen=True)
class Architecture:
    """One row of the architecture table.

    Module names are suffixes (peft matches `target_modules` by suffix); the bottleneck sites are
    regexes over full module names whose first matching group is the layer index:
    `attention_output` / `ffn_output` name the module whose output is the sub-layer's output
    before the residual add (Houlsby wraps it); `ffn_stream` names, post-LN, the LayerNorm after
    the feed-forward residual add, pre-LN the module that returns the stream after that add
    (Pfeiffer reads it). Exactly as docs/methods.md "Bottleneck adapters" describes.
    """

    model_type: str
    shape: Shape
    display: str
    lora_targets: tuple[str, ...]
    mlp_modules: tuple[str, ...]
    ia3_targets: tuple[str, ...]
    ia3_feedforward: tuple[str, ...]
    head_modules: tuple[str, ...]
    attention_output: str
    ffn_output: str
    ffn_stream: str
    post_ln: bool = False
    has_biases: bool = True
    # T5 was pre-trained with task prefixes ("summarize: "); mT5/umT5 were not
    task_prefix: bool = False
    # "mbart": the tokenizer wraps text in language-code tokens (src_lang/tgt_lang)
    language_codes: Literal["mbart"] | None = None
    # model kind ('classification', 'seq2seq', 'causal'; tasks.model_kind) -> why not
    unsupported_kinds: dict[str, str] = field(default_factory=dict)
    bottleneck_note: str = ""
    hidden_size_keys: tuple[str, ...] = ("hidden_size", "d_model", "n_embd", "dim")
    # fp16 overflows in this architecture's feed-forward activations (T5: the loss turns NaN)
    fp16_overflows: bool = False
    # the projections are transformers' Conv1D (GPT-2), not nn.Linear: several peft tuners
    # (LoHa, LoKr, OFT, BOFT, HRA) wrap nn.Linear only
    conv1d_layers: bool = False

    @property
    def family(self) -> str:
        """The product family of this shape: bert, gpt2 or t5."""
        return SHAPE_FAMILY[self.shape]

    def kind_reason(self, kind: str) -> str | None:
        """Why this architecture cannot serve a model kind, or None when it can."""
        return self.unsupported_kinds.get(kind)
