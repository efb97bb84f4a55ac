"""Decoder evaluation shares one prompt pass between the loss and generate
(finetune/tasks/prompt_cache.py): same losses and texts as two separate passes, fewer tokens."""

from __future__ import annotations

import pytest

from finetune.commands.build import make_task
from finetune.models import ARCHITECTURES
from finetune.tasks.base import Example
from tests.test_generation_units import SOURCES, SUMMARY, make_recipe

DECODERS = [name for name, arch in ARCHITECTURES.items() if arch.shape == "decoder"]
TARGETS = ["a dog", "the man walks in the park", "two cats", "red"]


def arch_task(model_dir, model_type: str, **gen):
    """A summarization task and its model for one model_type of the architecture table."""
    from finetune.models.loading import load_base_model, load_tokenizer
    from finetune.models.names import resolve_name

    arch = ARCHITECTURES[model_type]
    task = make_task(make_recipe(str(model_dir), SUMMARY, **gen), arch)
    task.tokenizer = load_tokenizer(str(model_dir))
    kind = task.model_kind()
    model = load_base_model(resolve_name(str(model_dir)), arch, kind, task.tokenizer).model
    return task, model.eval()


def eval_batch(task):
    examples = [Example(source=s, target=(t,), where="") for s, t in zip(SOURCES, TARGETS)]
    return task.collate(task.encode(examples, training=False))


class TokenCounter:
    """Counts the input tokens every forward of the model sees."""

    def __init__(self, model):
        self.tokens = 0
        model.register_forward_pre_hook(self.hook, with_kwargs=True)

    def hook(self, module, args, kwargs):
        ids = kwargs.get("input_ids", args[0] if args else None)
        self.tokens += ids.numel()


def both_ways(task, model, batch):
    """(losses, texts, tokens) shared, then the same as two separate passes."""
    import torch

    inner = model.get_base_model() if hasattr(model, "get_base_model") else model
    counter = TokenCounter(inner)  # peft's generate bypasses the PeftModel's own forward
    with torch.inference_mode():
        assert task.can_share_prompt(model, batch)
        losses, texts = task.eval_batch(model, batch, predict=True)
        shared_tokens, counter.tokens = counter.tokens, 0
        apart_losses = task.example_losses(model, batch)
        apart_texts = task.generate(model, batch)
    return (losses, texts, shared_tokens), (apart_losses, apart_texts, counter.tokens)


@pytest.mark.parametrize("model_type", DECODERS)
def test_shared_prompt_pass_gives_the_losses_and_texts_of_two_passes(model_type, tiny_model_dir):
    task, model = arch_task(tiny_model_dir(model_type), model_type, num_beams=1)
    batch = eval_batch(task)
    if not task.can_share_prompt(model, batch):
        assert model.generation_config.cache_implementation is not None  # Gemma 2's own cache
        return
    shared, apart = both_ways(task, model, batch)
    assert shared[0] == pytest.approx(apart[0], rel=1e-4, abs=1e-5)
    assert shared[1] == apart[1]
    assert shared[2] < apart[2]  # each prompt ran through the model once, not twice


@pytest.mark.parametrize(("num_beams", "sub_batch"), [(3, None), (1, 3), (2, 1)])
def test_shared_prompt_pass_with_beams_and_sub_batches(num_beams, sub_batch, tiny_model_dir):
    task, model = arch_task(
        tiny_model_dir("gpt2"), "gpt2", num_beams=num_beams, batch_size=sub_batch
    )
    shared, apart = both_ways(task, model, eval_batch(task))
    assert shared[0] == pytest.approx(apart[0], rel=1e-4, abs=1e-5)
    assert shared[1] == apart[1]
    assert len(set(shared[1])) > 1  # not a degenerate constant output


def test_prompt_learning_keeps_two_passes(tiny_model_dir):
    from peft import PromptTuningConfig, TaskType, get_peft_model

    task, model = arch_task(tiny_model_dir("gpt2"), "gpt2")
    config = PromptTuningConfig(task_type=TaskType.CAUSAL_LM, num_virtual_tokens=2)
    peft_model = get_peft_model(model, config).eval()
    assert not task.can_share_prompt(peft_model, eval_batch(task))


def test_lora_model_shares_the_prompt_pass(tiny_model_dir):
    from peft import LoraConfig, TaskType, get_peft_model

    task, model = arch_task(tiny_model_dir("gpt2"), "gpt2", num_beams=2)
    config = LoraConfig(task_type=TaskType.CAUSAL_LM, r=4, target_modules=["c_attn"])
    peft_model = get_peft_model(model, config).eval()
    shared, apart = both_ways(task, peft_model, eval_batch(task))
    assert shared[0] == pytest.approx(apart[0], rel=1e-4, abs=1e-5)
    assert shared[1] == apart[1]
    assert shared[2] < apart[2]
