"""One autocast copy of an input several linear layers read (finetune/models/shared_cast.py):
which blocks qualify (read from their forward's source), the same forward numbers bit for bit,
gradients equal up to bf16 rounding, fewer casts, and the blocks left alone."""

from __future__ import annotations

import copy

import pytest

from tests.test_frozen_dtype import _model, _step


def _reads(source: str):
    from finetune.models.shared_cast import source_reads

    return source_reads(source)


def test_transformers_blocks_qualify_by_their_source():
    from transformers.models.bert.modeling_bert import BertSelfAttention
    from transformers.models.llama.modeling_llama import LlamaAttention, LlamaMLP
    from transformers.models.t5.modeling_t5 import T5Attention

    from finetune.models.lean_backward import _gated_mlp_forward
    from finetune.models.shared_cast import forward_reads

    assert forward_reads(BertSelfAttention.forward) == (
        "hidden_states",
        frozenset({"query", "key", "value"}),
    )
    assert forward_reads(LlamaAttention.forward)[1] == {"q_proj", "k_proj", "v_proj"}
    assert forward_reads(LlamaMLP.forward) == ("x", frozenset({"gate_proj", "up_proj"}))
    assert forward_reads(_gated_mlp_forward) == ("x", frozenset({"gate_proj", "up_proj"}))
    # T5 picks its key/value states from the input itself: left alone
    assert forward_reads(T5Attention.forward) is None


@pytest.mark.parametrize(
    "body",
    [
        "return self.a(x) + self.b(x) + x",  # the input itself joins the sum
        "return self.a(x).to(x.dtype) + self.b(x)",  # reads its dtype, which the cast changes
        "x = x * 2\n    return self.a(x) + self.b(x)",  # reassigned
        "return self.a(x, 1) + self.b(x)",  # more than the input handed to a child
        "return other.a(x) + self.b(x)",  # not a child of the block
        "return torch.relu(x) + self.a(x)",
    ],
)
def test_forwards_that_read_the_input_otherwise_do_not_qualify(body):
    assert _reads(f"def forward(self, x):\n    {body}\n") is None
    # the same block reading its input only through two children qualifies
    assert _reads("def forward(self, x):\n    return self.a(x) + self.b(x)\n") == (
        "x",
        frozenset({"a", "b"}),
    )


def test_shape_reads_are_allowed():
    source = (
        "def forward(self, h):\n    n = h.shape[:-1]\n    return self.a(h).view(*n), self.b(h)\n"
    )
    assert _reads(source) == ("h", frozenset({"a", "b"}))


def _casts(model, batch) -> int:
    """float32 -> bf16 copies of activations (3-d tensors) in one forward and backward."""
    import torch
    from torch.utils._python_dispatch import TorchDispatchMode

    seen = []

    class Casts(TorchDispatchMode):
        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            kwargs = kwargs or {}
            if func is torch.ops.aten._to_copy.default and args[0].dim() == 3:
                seen.append((args[0].dtype, kwargs.get("dtype")))
            return func(*args, **kwargs)

    with Casts():
        _step(model, batch)
    return sum(1 for src, dst in seen if src == torch.float32 and dst == torch.bfloat16)


@pytest.mark.parametrize("family", ["bert", "llama"])
def test_same_forward_close_gradients_fewer_casts(family, tiny_model_dir):
    import torch

    from finetune.models.frozen_dtype import store_frozen_in
    from finetune.models.shared_cast import HOOKED, share_input_casts

    if family == "llama":
        from peft import LoraConfig, TaskType, get_peft_model

        from tests.test_chunked_loss import train_batch
        from tests.test_prompt_cache import arch_task

        task, base = arch_task(tiny_model_dir("llama"), "llama")
        torch.manual_seed(0)
        config = LoraConfig(
            task_type=TaskType.CAUSAL_LM,
            r=4,
            lora_dropout=0.0,
            target_modules=["q_proj", "v_proj"],
            init_lora_weights=False,
        )
        model, batch = get_peft_model(base, config), train_batch(task)
        blocks = 2 * base.config.num_hidden_layers  # attention and gated MLP per layer
    else:
        model, batch = _model(tiny_model_dir, "bert", "lora", dropout=0.0)
        blocks = model.config.num_hidden_layers  # self-attention per layer
    store_frozen_in(model, torch.bfloat16)
    shared = copy.deepcopy(model)
    assert share_input_casts(shared, torch.bfloat16) == blocks
    assert share_input_casts(shared, torch.bfloat16) == 0  # once per block
    assert sum(hasattr(m, HOOKED) for m in shared.modules()) == blocks

    loss, grads = _step(model, batch)
    shared_loss, shared_grads = _step(shared, batch)
    assert torch.equal(shared_loss, loss)  # the forward is bit for bit the same
    assert grads.keys() == shared_grads.keys() and grads
    for key, grad in grads.items():  # gradients summed in bf16 instead of float32
        torch.testing.assert_close(shared_grads[key], grad, rtol=0.05, atol=1e-3, msg=key)
    assert _casts(shared, batch) < _casts(model, batch)


def test_nothing_changes_without_autocast(tiny_model_dir):
    import torch

    from finetune.models.frozen_dtype import store_frozen_in, uncast_lora_inputs
    from finetune.models.shared_cast import share_input_casts

    model, batch = _model(tiny_model_dir, "bert", "lora", dropout=0.0)
    model.eval().requires_grad_(False)
    store_frozen_in(model, torch.bfloat16, inference=True)  # every linear layer in bf16
    shared = copy.deepcopy(model)
    assert share_input_casts(shared, torch.bfloat16) > 0
    with torch.autocast("cpu", dtype=torch.bfloat16), torch.no_grad():
        assert torch.equal(shared(**batch).logits, model(**batch).logits)
    float_model, _ = _model(tiny_model_dir, "bert", "lora", dropout=0.0)
    uncast_lora_inputs(float_model)
    assert share_input_casts(float_model, torch.bfloat16) > 0
    seen = []
    attention = float_model.base_model.model.bert.encoder.layer[0].attention.self
    attention.query.register_forward_pre_hook(lambda m, args: seen.append(args[0].dtype))
    with torch.no_grad():
        float_model(**batch)
    assert seen == [torch.float32]  # no autocast: the input stays as it is


@pytest.mark.parametrize(("name", "options"), [("lora", {"dropout": 0.1}), ("dora", {})])
def test_layers_that_cast_their_input_themselves_are_left_alone(name, options, tiny_model_dir):
    """LoRA with dropout casts its input to float32 for the dropout, DoRA computes with it:
    a bf16 input would round differently there."""
    import torch

    from finetune.models.frozen_dtype import uncast_lora_inputs
    from finetune.models.shared_cast import share_input_casts

    model, _ = _model(tiny_model_dir, "bert", name, dropout=options.get("dropout", 0.0))
    uncast_lora_inputs(model)
    assert share_input_casts(model, torch.bfloat16) == 0


@pytest.mark.parametrize(("precision", "shares"), [("bf16", True), ("fp32", False)])
def test_training_setup_shares_casts_under_mixed_precision(
    tmp_path, tiny_model_dir, sentiment_files, precision, shares
):
    from finetune.commands.run import load_checked
    from finetune.models.shared_cast import HOOKED
    from finetune.setup.accelerator import setup_accelerator
    from finetune.setup.run_setup import RunSetup
    from tests.conftest import classification_recipe, write_recipe

    train, dev = sentiment_files
    data = classification_recipe(tiny_model_dir("bert"), train, dev, tmp_path / "out", {})
    data["method"] = {"name": "lora", "dropout": 0.0}
    data["train"]["precision"] = precision
    path = write_recipe(tmp_path / "recipe.yaml", data)
    recipe = load_checked(path, [])
    setup = RunSetup.for_training(recipe, path.parent, setup_accelerator(recipe))
    hooked = [type(m).__name__ for m in setup.model.modules() if hasattr(m, HOOKED)]
    layers = setup.model.base_model.model.config.num_hidden_layers
    assert hooked == (["BertSelfAttention"] * layers if shares else [])
