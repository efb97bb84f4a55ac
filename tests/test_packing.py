"""benchmarks/packing.py (gpu_check's check 7): packed decoder batches against padded ones.

Packed rows (position_ids restarting per sequence, no attention_mask) must give each sequence
the loss its padded row gives: transformers builds a block-diagonal mask from the restarts. The
same row with positions running on is one long sequence to the model, and the check must see
that (else it could not fail).
"""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")

from benchmarks import packing  # noqa: E402


@pytest.fixture(scope="module")
def model():
    return packing.random_llama(real=False, seed=0).eval()


@pytest.fixture(scope="module")
def data():
    return packing.examples(6, packing.TINY_SIZE["vocab_size"], seed=1, real=False)


def test_packed_batch_layout(data):
    batch = packing.packed_batch(data[:2])
    lengths = [len(e.input_ids) for e in data[:2]]
    assert batch["input_ids"].shape == (1, sum(lengths)) and "attention_mask" not in batch
    assert batch["position_ids"][0].tolist() == list(range(lengths[0])) + list(range(lengths[1]))
    assert batch["labels"][0, 0] == batch["labels"][0, lengths[0]] == packing.IGNORE
    assert batch["labels"][0, -1] == data[1].input_ids[-1]  # targets kept


@pytest.mark.parametrize("attention", ["sdpa", "eager"])
def test_packed_losses_equal_padded_per_sequence(model, data, attention):
    """sdpa and eager both get the block-diagonal mask transformers builds from the restarts."""
    lengths = [len(e.input_ids) for e in data]
    assert len(set(lengths)) > 1  # padding happens
    model.set_attn_implementation(attention)
    try:
        assert model.config._attn_implementation == attention
        with torch.no_grad():
            padded = packing.padded_losses(model, packing.padded_batch(data))
            packed = packing.packed_losses(model, packing.packed_batch(data), lengths)
        assert padded.shape == packed.shape == (len(data),)
        assert torch.allclose(padded, packed, atol=packing.TOLERANCE["cpu"], rtol=0)
        assert packing.loss_difference(model, data, "cpu") <= packing.TOLERANCE["cpu"]
    finally:
        model.set_attn_implementation("sdpa")


def test_positions_running_on_give_other_losses(model, data):
    """Without the restarts the row is one causal sequence: later sequences attend to earlier
    ones and sit at shifted positions, so their losses change: the check can fail."""
    assert packing.loss_difference(model, data, "cpu", restart_positions=False) > 1e-3


def test_train_speed_runs_both_ways(data):
    model = packing.lora(packing.random_llama(real=False).train())
    groups = packing.batches(data * 2, 3)
    for packed in (False, True):
        speed = packing.train_speed(model, groups, packed, "cpu", bf16=False)
        assert speed["samples_per_s"] > 0 and speed["tokens_per_s"] > speed["samples_per_s"]
