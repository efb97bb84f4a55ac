"""A tiny random-initialised checkpoint of every model_type in the architecture table, offline.

Hidden size 32, 2 layers, a word-level vocabulary of ~110 words (tests/tiny_models.WORDS): a
training step takes milliseconds. Each tokenizer is built here with the special tokens and the
template its architecture's real tokenizer uses (BERT: [CLS] a [SEP] b [SEP] with segment ids;
RoBERTa-style: <s> a </s></s> b </s>; Llama-style decoders: a leading <s> and no pad token;
seq2seq: a closing </s>), wrapped in PreTrainedTokenizerFast, except where the real tokenizer
class builds from a vocabulary (T5/mT5/umT5 Unigram, mBART with its language codes). Encoders
are saved without a head (the head is new, as with a real base checkpoint); decoders and
encoder-decoders with their LM head.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tests.tiny_models import WORDS, build_bert, build_gpt2, build_t5

PAD, BOS, EOS, UNK, MASK = "<pad>", "<s>", "</s>", "<unk>", "<mask>"
SPECIALS = [PAD, BOS, EOS, UNK, MASK]  # ids 0..4 in every word-level tokenizer here
H = {"hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2, "intermediate_size": 64}

# model_type -> (tokenizer template, config kwargs). Templates: bert (segment ids), roberta,
# bos (decoder with a leading <s>, no pad token), plain (decoder, nothing added, no pad token),
# eos (seq2seq: text </s>), bart (<s> text </s>).
ENCODERS: dict[str, tuple[str, dict[str, Any]]] = {
    "roberta": ("roberta", {**H, "type_vocab_size": 1}),
    "xlm-roberta": ("roberta", {**H, "type_vocab_size": 1}),
    "camembert": ("roberta", {**H, "type_vocab_size": 1}),
    "electra": ("bert", {**H, "embedding_size": 32}),
    "deberta": ("roberta", H),
    "deberta-v2": ("roberta", H),
    "distilbert": ("roberta", {"dim": 32, "n_layers": 2, "n_heads": 2, "hidden_dim": 64}),
    "albert": ("bert", {**H, "embedding_size": 16}),
    "mpnet": ("roberta", H),
    "modernbert": ("roberta", {**H, "global_attn_every_n_layers": 1, "cls_token_id": 1}),
}
_GQA = {**H, "num_key_value_heads": 1}
DECODERS: dict[str, tuple[str, dict[str, Any]]] = {
    "gpt_neo": (
        "plain",
        {
            "hidden_size": 32,
            "num_layers": 2,
            "num_heads": 2,
            "intermediate_size": 64,
            "attention_types": [[["global", "local"], 1]],
            "window_size": 16,
        },
    ),
    "gpt_neox": ("plain", H),
    "opt": ("plain", {**H, "ffn_dim": 64, "word_embed_proj_dim": 32}),
    "bloom": ("plain", {"hidden_size": 32, "n_layer": 2, "n_head": 2}),
    "llama": ("bos", _GQA),
    "mistral": ("bos", _GQA),
    "qwen2": ("qwen", _GQA),  # transformers always loads Qwen2Tokenizer for qwen2
    "qwen3": ("plain", {**_GQA, "head_dim": 16}),
    "gemma": ("bos", {**_GQA, "head_dim": 16}),
    "gemma2": ("bos", {**_GQA, "head_dim": 16, "sliding_window": 16}),
    "phi": ("plain", H),
    "phi3": ("plain", H),
    "olmo": ("plain", H),
}
_S2S = {
    "d_model": 32,
    "encoder_layers": 2,
    "decoder_layers": 2,
    "encoder_attention_heads": 2,
    "decoder_attention_heads": 2,
    "encoder_ffn_dim": 64,
    "decoder_ffn_dim": 64,
}
_T5 = {"d_model": 32, "d_kv": 16, "d_ff": 64, "num_layers": 2, "num_heads": 2}
SEQ2SEQ: dict[str, tuple[str, dict[str, Any]]] = {
    "mt5": ("t5", _T5),
    "umt5": ("t5", _T5),
    "bart": ("bart", {**_S2S, "decoder_start_token_id": 2, "forced_bos_token_id": None}),
    "mbart": ("mbart", {**_S2S, "decoder_start_token_id": 2}),
    "marian": ("eos", {**_S2S, "decoder_start_token_id": 0}),
    "pegasus": ("eos", {**_S2S, "decoder_start_token_id": 0}),
}


def word_level_tokenizer(template: str) -> Any:
    """A whitespace word-level tokenizer with SPECIALS first and the architecture's template."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    vocab = {tok: i for i, tok in enumerate(SPECIALS + sorted(set(WORDS)))}
    backend = Tokenizer(models.WordLevel(vocab=vocab, unk_token=UNK))
    backend.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    backend.decoder = decoders.WordPiece(prefix="##")  # joins words with spaces
    ids = {t: vocab[t] for t in SPECIALS}
    single, pair = {
        "bert": (f"{BOS} $A {EOS}", f"{BOS} $A {EOS} $B:1 {EOS}:1"),
        "roberta": (f"{BOS} $A {EOS}", f"{BOS} $A {EOS} {EOS} $B {EOS}"),
        "bos": (f"{BOS} $A", f"{BOS} $A $B"),
        "plain": ("$A", "$A $B"),
        "eos": (f"$A {EOS}", f"$A $B {EOS}"),
        "bart": (f"{BOS} $A {EOS}", f"{BOS} $A {EOS} {EOS} $B {EOS}"),
    }[template]
    used = [(t, ids[t]) for t in (BOS, EOS) if t in single + pair]
    backend.post_processor = processors.TemplateProcessing(
        single=single, pair=pair, special_tokens=used
    )
    decoder_only = template in ("bos", "plain")
    specials: dict[str, Any] = {"unk_token": UNK, "bos_token": BOS, "eos_token": EOS}
    if not decoder_only:  # Llama-style tokenizers ship without a pad token
        specials.update(pad_token=PAD, mask_token=MASK)
    if template in ("bert", "roberta"):
        specials.update(cls_token=BOS, sep_token=EOS)
    names = ["input_ids", "attention_mask"] + (["token_type_ids"] if template == "bert" else [])
    return PreTrainedTokenizerFast(tokenizer_object=backend, model_input_names=names, **specials)


def mbart_tokenizer() -> Any:
    """The real MBartTokenizer (language-code tokens en_XX, de_DE, ...) over a tiny Unigram."""
    from transformers import MBartTokenizer

    pieces = [(BOS, 0.0), (PAD, 0.0), (EOS, 0.0), (UNK, 0.0)]
    pieces += [("▁" + w, -2.0) for w in sorted(set(WORDS))]
    pieces += [("▁", -3.0)] + [(c, -5.0) for c in sorted({c for w in WORDS for c in w})]
    return MBartTokenizer(vocab=pieces, src_lang="en_XX", tgt_lang="de_DE")


def qwen_tokenizer() -> Any:
    """The real Qwen2Tokenizer (byte-level BPE, <|endoftext|> as eos and pad) over WORDS."""
    from transformers import Qwen2Tokenizer
    from transformers.convert_slow_tokenizer import bytes_to_unicode

    from tests.tiny_models import bpe_merges

    vocab = {c: i for i, c in enumerate(sorted(set(bytes_to_unicode().values())))}
    for word in sorted(set(WORDS)):
        vocab.setdefault("Ġ" + word, len(vocab))
    vocab["<|endoftext|>"] = len(vocab)
    merges = bpe_merges(vocab)
    return Qwen2Tokenizer(vocab=vocab, merges=merges)


def t5_tokenizer() -> Any:
    from transformers import T5Tokenizer

    pieces = [(PAD, 0.0), (EOS, 0.0), (UNK, 0.0)]
    pieces += [("▁" + w, -2.0) for w in sorted(set(WORDS))]
    pieces += [("▁", -3.0)] + [(c, -5.0) for c in sorted({c for w in WORDS for c in w})]
    return T5Tokenizer(vocab=pieces, extra_ids=0)


def _token_ids(tokenizer: Any) -> dict[str, Any]:
    """pad/bos/eos ids for the config, as the tokenizer defines them."""
    return {
        "pad_token_id": tokenizer.pad_token_id,
        "bos_token_id": tokenizer.bos_token_id,
        "eos_token_id": tokenizer.eos_token_id,
    }


def build_arch(model_type: str, path: Path) -> Path:
    """Save a tiny random `model_type` checkpoint + tokenizer under `path`."""
    import torch
    from transformers import (
        CONFIG_MAPPING,
        AutoModel,
        AutoModelForCausalLM,
        AutoModelForSeq2SeqLM,
    )

    if model_type in ENCODERS:
        template, kwargs = ENCODERS[model_type]
        auto: Any = AutoModel
    elif model_type in DECODERS:
        template, kwargs = DECODERS[model_type]
        auto = AutoModelForCausalLM
    else:
        template, kwargs = SEQ2SEQ[model_type]
        auto = AutoModelForSeq2SeqLM
    if template == "t5":
        tokenizer = t5_tokenizer()
        kwargs = {**kwargs, "decoder_start_token_id": 0}
    elif template == "mbart":
        tokenizer = mbart_tokenizer()
    elif template == "qwen":
        tokenizer = qwen_tokenizer()
    else:
        tokenizer = word_level_tokenizer(template)
    config = CONFIG_MAPPING[model_type](
        vocab_size=len(tokenizer),
        max_position_embeddings=256,
        **{**_token_ids(tokenizer), **kwargs},
    )
    if model_type == "marian":
        config.decoder_vocab_size = len(tokenizer)
    torch.manual_seed(0)
    auto.from_config(config).save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


def _named(model_type: str):
    return lambda path: build_arch(model_type, path)


ARCH_BUILDERS = {
    "bert": build_bert,
    "gpt2": build_gpt2,
    "t5": build_t5,
    **{t: _named(t) for t in (*ENCODERS, *DECODERS, *SEQ2SEQ)},
}
