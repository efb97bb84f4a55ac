"""The decoder eval's loss pass extends the prompt cache in place and crops it back for
`generate` (finetune/tasks/prompt_cache.py) instead of copying it: one copy of every prompt's
keys and values, not two. Losses and texts equal to two separate passes are checked for every
decoder in tests/test_prompt_cache.py; here, that the copy is really gone where it can be."""

from __future__ import annotations

import pytest

from finetune.tasks import prompt_cache
from finetune.tasks.padding import trim_padding
from tests.test_prompt_cache import arch_task, eval_batch


def prompt_pass(model_type, tiny_model_dir):
    task, model = arch_task(tiny_model_dir(model_type), model_type, num_beams=1)
    batch = eval_batch(task)
    ids, mask = trim_padding(batch["prompt_ids"], batch["prompt_mask"], left=True)
    return task, model, batch, ids, mask


@pytest.mark.parametrize("model_type", ["llama", "gpt2", "qwen2"])
def test_the_loss_pass_crops_instead_of_copying(model_type, tiny_model_dir, monkeypatch):
    import torch

    task, model, batch, ids, mask = prompt_pass(model_type, tiny_model_dir)
    with torch.inference_mode():
        cache = prompt_cache.prefill(model, ids, mask)
        assert prompt_cache.croppable(cache)
        before = [(layer.keys.clone(), layer.values.clone()) for layer in cache.layers]

        def no_copy(*args, **kwargs):
            raise AssertionError("the prompt cache was copied")

        monkeypatch.setattr(prompt_cache.copy, "deepcopy", no_copy)
        losses = prompt_cache.losses_after_prompt(
            model, cache, ids, mask, batch["labels"], task.tokenizer.pad_token_id
        )
    assert len(losses) == ids.shape[0]
    assert cache.get_seq_length() == ids.shape[1] - 1  # back to the prompt minus its last token
    for layer, (keys, values) in zip(cache.layers, before):
        assert torch.equal(layer.keys, keys) and torch.equal(layer.values, values)


def test_a_cache_that_cannot_crop_back_is_copied(tiny_model_dir):
    from transformers.cache_utils import DynamicCache, DynamicSlidingWindowLayer

    cache = DynamicCache()
    assert not prompt_cache.croppable(cache)  # no layers yet
    cache.layers.append(DynamicSlidingWindowLayer(sliding_window=4))
    assert not prompt_cache.croppable(cache)
