"""Tiny random-initialised BERT, GPT-2 and T5 checkpoints with tokenizers made here, offline.

Each is saved with save_pretrained into a directory that recipes name as `model.name`, exactly
as a user's local checkpoint would be. Sizes are chosen so a training step takes milliseconds.
"""

from __future__ import annotations

import random
from pathlib import Path

WORDS = [
    "good",
    "great",
    "fine",
    "lovely",
    "superb",
    "bad",
    "awful",
    "poor",
    "dull",
    "boring",
    "the",
    "a",
    "an",
    "movie",
    "film",
    "plot",
    "actor",
    "story",
    "was",
    "is",
    "very",
    "really",
    "quite",
    "not",
    "it",
    "this",
    "that",
    "and",
    "but",
    "with",
    "of",
    "to",
    "in",
    "for",
    "on",
    "man",
    "woman",
    "dog",
    "cat",
    "runs",
    "walks",
    "street",
    "park",
    "red",
    "blue",
    "green",
    "small",
    "big",
    "young",
    "old",
    "two",
    "three",
    "people",
    "ein",
    "eine",
    "der",
    "die",
    "das",
    "mann",
    "frau",
    "hund",
    "katze",
    "läuft",
    "geht",
    "straße",
    "park",
    "rot",
    "blau",
    "grün",
    "klein",
    "groß",
    "jung",
    "alt",
    "zwei",
    "drei",
    "leute",
    "ist",
    "sind",
    "und",
    "mit",
    "auf",
    "im",
    "summary",
    "person1",
    "person2",
    "hello",
    "how",
    "are",
    "you",
    "doing",
    "today",
    "fine",
    "thanks",
    "talk",
    "about",
    "meeting",
    "tomorrow",
    "dinner",
]
POSITIVE = ["good", "great", "fine", "lovely", "superb"]
NEGATIVE = ["bad", "awful", "poor", "dull", "boring"]
FILLER = ["the", "movie", "film", "plot", "story", "was", "is", "very", "really", "quite", "it"]


def sentiment_rows(n: int, seed: int) -> list[dict]:
    """A learnable toy sentiment set: the label is carried by one positive/negative word."""
    rng = random.Random(seed)
    rows = []
    for _ in range(n):
        label = rng.randint(0, 1)
        cue = rng.choice(POSITIVE if label else NEGATIVE)
        words = rng.sample(FILLER, rng.randint(2, 6)) + [cue]
        rng.shuffle(words)
        rows.append({"text": " ".join(words), "label": label})
    return rows


def build_bert(path: Path, dropout: float = 0.1) -> Path:
    from transformers import BertConfig, BertModel, BertTokenizer

    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    vocab = {tok: i for i, tok in enumerate(specials + sorted(set(WORDS)))}
    tokenizer = BertTokenizer(vocab=vocab)
    config = BertConfig(
        vocab_size=len(vocab),
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=256,
        pad_token_id=0,
        hidden_dropout_prob=dropout,
        attention_probs_dropout_prob=dropout,
    )
    _seed()
    BertModel(config).save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


def build_gpt2(path: Path) -> Path:
    from transformers import GPT2Config, GPT2LMHeadModel, GPT2Tokenizer
    from transformers.convert_slow_tokenizer import bytes_to_unicode

    chars = sorted(set(bytes_to_unicode().values()))
    vocab = {c: i for i, c in enumerate(chars)}
    for word in sorted(set(WORDS)):
        vocab.setdefault("Ġ" + word, len(vocab))
    vocab["<|endoftext|>"] = len(vocab)
    merges = _merges_for(vocab)
    tokenizer = GPT2Tokenizer(vocab=vocab, merges=merges)
    config = GPT2Config(
        vocab_size=len(vocab),
        n_embd=32,
        n_layer=2,
        n_head=2,
        n_positions=512,
        bos_token_id=vocab["<|endoftext|>"],
        eos_token_id=vocab["<|endoftext|>"],
    )
    _seed()
    GPT2LMHeadModel(config).save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


def _merges_for(vocab: dict[str, int]) -> list[tuple[str, str]]:
    """BPE merges that build each 'Ġword' token left to right from characters."""
    merges: list[tuple[str, str]] = []
    seen: set[str] = set()
    for token in list(vocab):
        if not token.startswith("Ġ") or len(token) < 2:
            continue
        current = token[0]
        for ch in token[1:]:
            if f"{current} {ch}" not in seen:
                seen.add(f"{current} {ch}")
                merges.append((current, ch))
            current += ch
            vocab.setdefault(current, len(vocab))
    return merges


def build_t5(path: Path) -> Path:
    from transformers import T5Config, T5ForConditionalGeneration, T5Tokenizer

    pieces = [("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0)]
    pieces += [("▁" + w, -2.0) for w in sorted(set(WORDS))]
    pieces += [("▁", -3.0)] + [(c, -5.0) for c in sorted({c for w in WORDS for c in w})]
    tokenizer = T5Tokenizer(vocab=pieces, extra_ids=0)
    config = T5Config(
        vocab_size=len(pieces),
        d_model=32,
        d_kv=16,
        d_ff=64,
        num_layers=2,
        num_heads=2,
        decoder_start_token_id=0,
        pad_token_id=0,
        eos_token_id=1,
    )
    _seed()
    T5ForConditionalGeneration(config).save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


def _seed() -> None:
    import torch

    torch.manual_seed(0)


BUILDERS = {
    "bert": build_bert,
    "gpt2": build_gpt2,
    "t5": build_t5,
    # dropout-free: for tests that compare two trainings for exact equality
    "bert-nodropout": lambda path: build_bert(path, dropout=0.0),
}


bpe_merges = _merges_for  # public name for tests/tiny_archs.py
