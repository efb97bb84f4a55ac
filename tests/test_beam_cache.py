"""Encoder-decoder beam search leaves the cross-attention cache in place
(finetune/tasks/beam_cache.py): the same tokens as transformers' own cache, no copy per step."""

from __future__ import annotations

import pytest

from finetune.models import ARCHITECTURES
from finetune.tasks.base import Example
from tests.test_generation_units import SOURCES, SUMMARY, task_and_model
from tests.test_prompt_cache import arch_task

ENCODER_DECODERS = [n for n, a in ARCHITECTURES.items() if a.shape == "encoder-decoder"]


class Counter:
    def __init__(self, cache):
        self.calls = 0
        original = cache.reorder_cache

        def counted(beam_idx):
            self.calls += 1
            return original(beam_idx)

        cache.reorder_cache = counted


@pytest.mark.parametrize("model_type", [*ENCODER_DECODERS, "bert"])  # bert: bert2bert
def test_beam_search_keeps_cross_attention_in_place_with_the_same_tokens(
    model_type, tiny_model_dir
):
    import torch

    from finetune.tasks.beam_cache import beam_search_cache

    task, model = arch_task(tiny_model_dir(model_type), model_type, num_beams=3)
    examples = [Example(source=s, target=None, where="") for s in SOURCES]
    batch = task.collate(task.encode(examples, training=False))
    config = task.generation_config(model)
    inputs = {"input_ids": batch["input_ids"], "attention_mask": batch["attention_mask"]}
    extra = beam_search_cache(model, 3)
    (cache,) = extra.values()
    cross, own = Counter(cache.cross_attention_cache), Counter(cache.self_attention_cache)
    with torch.inference_mode():
        stock = model.generate(**inputs, generation_config=config)
        ours = model.generate(**inputs, generation_config=config, **extra)
    assert torch.equal(stock, ours)
    assert cross.calls == 0 and own.calls > 0  # beams were reordered, cross-attention not copied


def test_greedy_search_and_decoders_keep_transformers_cache(tiny_model_dir):
    from finetune.tasks.beam_cache import beam_search_cache

    _, t5 = task_and_model(tiny_model_dir("t5"), "t5", SUMMARY)
    _, gpt2 = task_and_model(tiny_model_dir("gpt2"), "gpt2", SUMMARY)
    assert beam_search_cache(t5.model, 1) == {}
    assert beam_search_cache(gpt2.model, 4) == {}


def test_eval_generation_uses_the_shared_cross_attention_cache(tiny_model_dir, monkeypatch):
    import torch

    from finetune.tasks import generation
    from finetune.tasks.beam_cache import beam_search_cache

    made = []

    def spy(model, num_beams):
        extra = beam_search_cache(model, num_beams)
        made.extend(extra.values())
        return extra

    monkeypatch.setattr(generation, "beam_search_cache", spy)
    task, model = arch_task(tiny_model_dir("t5"), "t5", num_beams=3, batch_size=2)
    examples = [Example(source=s, target=None, where="") for s in SOURCES]
    with torch.inference_mode():
        texts = task.generate(model, task.collate(task.encode(examples, training=False)))
    assert len(texts) == 4 and len(made) == 2  # one fresh cache per sub-batch of 2
    assert all(cache.self_attention_cache.get_seq_length() > 0 for cache in made)
