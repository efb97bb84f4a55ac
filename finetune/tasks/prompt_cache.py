"""One pass over a decoder's prompts, shared by the evaluation loss and by generate.

A decoder's evaluation batch needs the loss on the targets (teacher forcing over prompt + target)
and generated text (from the prompt alone). Done separately, every prompt runs through the model
twice, and prompts are most of the tokens (DialogSum: about 200 prompt tokens per 30 target
tokens). Here the prompt minus its last token runs once into a KV cache; the loss continues from
that cache with the last prompt token + the target, the cache is cropped back to the prompt, and
`generate` continues from it with the last prompt token: transformers' documented prefix-cache
reuse, without a second copy of the cache. It is the decoders' counterpart of the
encoder-decoders' shared encoder pass (`run_encoder`).

Prompts are left-padded, so positions come from the attention mask, as `generate` computes them.
"""

from __future__ import annotations

import copy
import inspect
from typing import TYPE_CHECKING

from finetune.tasks.padding import IGNORE, example_mean_losses

if TYPE_CHECKING:  # pragma: no cover
    import torch
    from transformers import Cache

    from finetune.tasks.padding import Generator


def cache_keyword(model: Generator) -> str:
    """The name the model's forward takes its KV cache under: transformers renamed
    `past_key_values` to `cache` within 5.x, and both releases are supported."""
    from finetune.methods.wrapped import transformers_model

    base = transformers_model(model)
    return "cache" if "cache" in inspect.signature(base.forward).parameters else "past_key_values"


def positions(mask: torch.Tensor) -> torch.Tensor:
    """Position ids of left-padded rows: real tokens count from 0, padding sits at 0."""
    pos = mask.long().cumsum(-1) - 1
    return pos.masked_fill(mask == 0, 0)


def prefill(model: Generator, ids: torch.Tensor, mask: torch.Tensor) -> Cache:
    """The KV cache of every prompt column but the last (whose logit both consumers need)."""
    keyword = cache_keyword(model)
    out = model(
        input_ids=ids[:, :-1],
        attention_mask=mask[:, :-1],
        position_ids=positions(mask[:, :-1]),
        use_cache=True,
        logits_to_keep=1,
    )
    return out[keyword]


def split_targets(labels: torch.Tensor, pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Each row's labelled tokens (its target), right-padded: as input ids and as labels."""
    import torch

    rows = [row[row != IGNORE] for row in labels]
    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long, device=labels.device)
    targets = torch.full_like(ids, IGNORE)
    for i, row in enumerate(rows):
        ids[i, : len(row)] = row
        targets[i, : len(row)] = row
    return ids, targets


def losses_after_prompt(
    model: Generator,
    cache: Cache,
    ids: torch.Tensor,
    mask: torch.Tensor,
    labels: torch.Tensor,
    pad_id: int,
) -> list[float]:
    """Mean target-token cross-entropy per row, continuing from the prompt cache, which is
    then cropped back to the prompt for `generate` (a cache that cannot be cropped is copied
    first instead: two copies of every prompt's keys and values). The loss is computed from
    the hidden states at the target positions only (train/chunked_loss.py) where the model
    allows; else from its logits."""
    import torch

    from finetune.train.chunked_loss import example_losses

    target_ids, targets = split_targets(labels, pad_id)
    inputs = torch.cat([ids[:, -1:], target_ids], dim=1)
    full_mask = torch.cat([mask, (targets != IGNORE).long()], dim=1)
    crop = croppable(cache)
    kwargs = {
        "input_ids": inputs,
        "attention_mask": full_mask,
        "position_ids": positions(full_mask)[:, -inputs.shape[1] :],
        "use_cache": True,
        cache_keyword(model): cache if crop else copy.deepcopy(cache),
    }
    # position j predicts target token j; the last position predicts nothing
    aligned = torch.cat([targets, torch.full_like(targets[:, :1], IGNORE)], dim=1)
    losses = example_losses(model, kwargs, aligned)
    if losses is None:
        logits = model(**kwargs).logits[:, :-1]
        losses = example_mean_losses(logits, targets)
    if crop:
        cache.crop(-inputs.shape[1])
    return losses


def croppable(cache: Cache) -> bool:
    """Whether the loss pass may extend the prompt cache in place and crop it back after: a
    DynamicCache whose every layer is a plain DynamicLayer (sliding-window and quantised
    layers do not crop back exactly)."""
    from transformers.cache_utils import DynamicCache, DynamicLayer

    layers = list(getattr(cache, "layers", None) or [])
    return (
        type(cache) is DynamicCache
        and bool(layers)
        and all(type(layer) is DynamicLayer for layer in layers)
    )


def generation_cache(model: Generator, cache: Cache, num_beams: int) -> dict[str, object]:
    """The prompt cache as `generate` takes it: one copy per beam, beams of a row adjacent
    (generate expands the inputs the same way, but leaves a given cache alone)."""
    if num_beams > 1:
        cache.batch_repeat_interleave(num_beams)
    return {cache_keyword(model): cache}
