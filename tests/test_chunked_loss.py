"""The decoder loss computed at the labelled positions, in chunks (finetune/train/chunked_loss.py):
the same loss and gradients as `model(**batch).loss`, for every decoder of the architecture
table, LoRA or full fine-tuning (the head then trains, tied to the input embeddings), fp32 and
bf16 autocast; and the models whose own loss must stay."""

from __future__ import annotations

import pytest

from finetune.train import chunked_loss
from tests.test_prompt_cache import DECODERS, TARGETS, arch_task

SOURCES = [
    "hello how are you doing today a red dog runs in the park",
    "a cat",
    "fine thanks talk about a small woman walks in the street with two people",
    "the old man walks",
]


class OneProcess:
    """What causal_training_loss reads of an Accelerator on one process."""

    distributed_type = "NO"

    @staticmethod
    def unwrap_model(model):
        return model


def train_batch(task):
    from finetune.tasks.base import Example

    examples = [Example(source=s, target=(t,), where="") for s, t in zip(SOURCES, TARGETS)]
    batch = task.collate(task.encode(examples, training=True))
    batch.pop("idx")
    return batch


def loss_and_grads(model, batch, chunked: bool):
    """The micro-batch loss and the gradient of every trainable parameter."""
    model.zero_grad(set_to_none=True)
    if chunked:
        loss = chunked_loss.causal_training_loss(model, dict(batch), OneProcess())
    else:
        loss = model(**batch).loss
    (loss * 3.0).backward()  # the step scales the loss; gradients must follow the scale
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    return float(loss), grads


def lora(model, model_type):
    from peft import LoraConfig, TaskType, get_peft_model

    from finetune.models import ARCHITECTURES
    from finetune.tasks.padding import unwrap_parallel

    targets = list(ARCHITECTURES[model_type].lora_targets)
    config = LoraConfig(task_type=TaskType.CAUSAL_LM, r=4, target_modules=targets)
    return unwrap_parallel(get_peft_model(model, config))


def assert_same(plain, chunked, rel=1e-5, abs_=1e-6):
    import torch

    assert chunked[0] == pytest.approx(plain[0], rel=rel)
    assert plain[1].keys() == chunked[1].keys() and plain[1]
    for name, grad in plain[1].items():
        torch.testing.assert_close(chunked[1][name], grad, rtol=rel * 10, atol=abs_, msg=name)


@pytest.fixture()
def small_chunks(monkeypatch):
    """Three rows of logits per chunk: every batch here spans several chunks."""
    monkeypatch.setattr(chunked_loss, "CHUNK_BYTES", 4 * 3 * 128)


@pytest.mark.parametrize("model_type", DECODERS)
def test_chunked_loss_and_grads_equal_the_models_own(model_type, tiny_model_dir, small_chunks):
    task, model = arch_task(tiny_model_dir(model_type), model_type)
    model = lora(model, model_type).eval()  # eval: no dropout, so both passes see one function
    if chunked_loss.loss_head(model) is None:
        assert getattr(model.config, "final_logit_softcapping", None)  # Gemma 2 alone
        return
    batch = train_batch(task)
    assert batch["logits_to_keep"] < batch["input_ids"].shape[1]  # the window, not every column
    assert_same(loss_and_grads(model, batch, False), loss_and_grads(model, batch, True))
    assert chunked_loss.loss_head(model)._forward_pre_hooks  # the hook really ran the loss


@pytest.mark.parametrize("model_type", ["gpt2", "llama", "phi"])
def test_full_fine_tuning_trains_the_tied_head_the_same(model_type, tiny_model_dir, small_chunks):
    task, model = arch_task(tiny_model_dir(model_type), model_type)
    model.eval().requires_grad_(True)
    head = chunked_loss.loss_head(model)
    assert head.weight.requires_grad
    batch = train_batch(task)
    plain, chunked = loss_and_grads(model, batch, False), loss_and_grads(model, batch, True)
    assert_same(plain, chunked)
    assert any("embed" in n or "wte" in n or "head" in n for n in chunked[1])


def test_bf16_autocast_matches_within_bf16_rounding(tiny_model_dir, small_chunks):
    import torch

    task, model = arch_task(tiny_model_dir("llama"), "llama")
    model = lora(model, "llama").eval()
    batch = train_batch(task)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        plain = loss_and_grads(model, batch, False)
        chunked = loss_and_grads(model, batch, True)
    assert chunked[0] == pytest.approx(plain[0], rel=1e-3)
    for name, grad in plain[1].items():
        torch.testing.assert_close(chunked[1][name], grad, rtol=0.05, atol=2e-3, msg=name)


def test_per_example_losses_equal_the_plain_logits_path(tiny_model_dir, small_chunks):
    import torch

    from finetune.tasks.padding import example_mean_losses

    task, model = arch_task(tiny_model_dir("llama"), "llama")
    batch = train_batch(task)
    inputs = {k: batch[k] for k in ("input_ids", "attention_mask", "logits_to_keep")}
    labels = batch["labels"]
    with torch.inference_mode():
        logits = model(**inputs).logits
        plain = example_mean_losses(logits[:, :-1], labels[:, 1:])
        ours = chunked_loss.example_losses(model, inputs, chunked_loss.next_token_targets(labels))
    assert ours == pytest.approx(plain, rel=1e-5)
    assert len(set(ours)) == len(ours)  # one loss per row, not one shared value


def test_models_that_keep_their_own_loss(tiny_model_dir):
    from peft import LoraConfig, PromptTuningConfig, TaskType, get_peft_model

    _, gemma2 = arch_task(tiny_model_dir("gemma2"), "gemma2")
    assert chunked_loss.loss_head(gemma2) is None  # soft-capped logits
    _, model = arch_task(tiny_model_dir("gpt2"), "gpt2")
    assert chunked_loss.loss_head(model) is not None
    head_lora = LoraConfig(task_type=TaskType.CAUSAL_LM, r=4, target_modules=["c_attn", "lm_head"])
    assert chunked_loss.loss_head(get_peft_model(model, head_lora)) is None
    _, model = arch_task(tiny_model_dir("gpt2"), "gpt2")
    prompt = PromptTuningConfig(task_type=TaskType.CAUSAL_LM, num_virtual_tokens=2)
    assert chunked_loss.loss_head(get_peft_model(model, prompt)) is None


def test_sharded_runs_and_one_dimensional_labels_use_the_models_loss(tiny_model_dir):
    task, model = arch_task(tiny_model_dir("gpt2"), "gpt2")
    batch = train_batch(task)

    class Fsdp(OneProcess):
        distributed_type = "DistributedType.FSDP"

    plain = float(model(**batch).loss)
    assert float(chunked_loss.causal_training_loss(model, dict(batch), Fsdp())) == plain
    assert not getattr(chunked_loss.loss_head(model), chunked_loss.HOOKED, False)


def test_the_head_computes_no_logits_of_its_own(tiny_model_dir):
    """The memory the module exists for: under a request the head is handed zero positions."""
    task, model = arch_task(tiny_model_dir("llama"), "llama")
    model = lora(model, "llama").train()
    shapes = []
    head = chunked_loss.hooked_head(model)
    head.register_forward_hook(lambda module, args, out: shapes.append(tuple(out.shape)))
    batch = train_batch(task)
    chunked_loss.causal_training_loss(model, dict(batch), OneProcess()).backward()
    model(**batch)  # outside a request the head is the head it was
    assert shapes[0][1] == 0 and shapes[1][1] == batch["logits_to_keep"]
