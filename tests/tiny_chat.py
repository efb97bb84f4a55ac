"""A tiny Llama-architecture chat model: a word-level tokenizer with a ChatML template.

Like Qwen2.5-Instruct, its end of turn (`<|im_end|>`) is not its EOS (`</s>`), so a test can
tell which of the two generation stopped at. Newlines are tokens here (the pre-tokenizer keeps
"\\n"), so the newline ChatML puts after `<|im_end|>` is a real token that must stay out of the
loss. `bigram_chat_model` makes the model a fixed bigram table (attention and MLP outputs
zeroed), so what it generates is known in advance.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tests.tiny_archs import _GQA
from tests.tiny_models import WORDS

START, END = "<|im_start|>", "<|im_end|>"
SPECIALS = ["<pad>", "<s>", "</s>", "<unk>", START, END]
EXTRA = ["\n", "user", "assistant", "system", "Summarize", "following", "text.", "Translate"]
EXTRA += ["from", "English", "German.", "you", "are", "helpful"]
CHATML = (
    "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\n' + message['content'] "
    "+ '<|im_end|>' + '\n' }}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)


def chat_tokenizer(template: str | None = CHATML) -> Any:
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    words = SPECIALS + sorted(set(WORDS) | set(EXTRA))
    vocab = {w: i for i, w in enumerate(dict.fromkeys(words))}
    backend = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.Split(Regex("\n"), "isolated"), pre_tokenizers.Split(" ", "removed")]
    )
    backend.decoder = decoders.WordPiece(prefix="##")
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend,
        unk_token="<unk>",
        bos_token="<s>",
        eos_token="</s>",
        extra_special_tokens=[START, END],
    )
    if template:
        tokenizer.chat_template = template
    return tokenizer


def build_chat_llama(path: Path, template: str | None = CHATML) -> Path:
    """Save a tiny random Llama with the chat tokenizer under `path`."""
    import torch
    from transformers import AutoModelForCausalLM, LlamaConfig

    tokenizer = chat_tokenizer(template)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        max_position_embeddings=256,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.eos_token_id,
        **_GQA,
    )
    torch.manual_seed(0)
    AutoModelForCausalLM.from_config(config).save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


def bigram_chat_model(model: Any, tokenizer: Any, chain: dict[str, str]) -> Any:
    """Make `model` predict chain[current token] greedily: attention and MLP outputs are
    zeroed, so logits depend on the current token's embedding alone, and each listed token's
    successor gets a large logit (random unit embeddings keep the others far below)."""
    import torch

    ids = tokenizer.convert_tokens_to_ids
    with torch.no_grad():
        for layer in model.model.layers:
            layer.self_attn.o_proj.weight.zero_()
            layer.mlp.down_proj.weight.zero_()
        model.model.norm.weight.fill_(1.0)
        embed = torch.nn.functional.normalize(torch.randn_like(model.model.embed_tokens.weight))
        model.model.embed_tokens.weight.copy_(embed)
        head = torch.zeros_like(model.lm_head.weight)
        for current, following in chain.items():
            head[ids(following)] += 4.0 * embed[ids(current)]
        model.config.tie_word_embeddings = False
        model.lm_head.weight = torch.nn.Parameter(head)
    return model.eval()
