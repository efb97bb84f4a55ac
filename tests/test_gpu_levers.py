"""Issue #16 on a CPU: gradient checkpointing, the precision rule, and QLoRA's refusals.

Gradient checkpointing must not change the maths: the same loss and the same gradients on every
trainable parameter, for each family and for a frozen backbone (LoRA, Houlsby) as well as full
fine-tuning, where the old reentrant checkpoint silently produced no adapter gradient.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import pytest

from finetune.cli import app
from finetune.models import ARCHITECTURES, FAMILIES
from finetune.models.loading import load_tokenizer
from finetune.recipe.schema import Recipe
from finetune.setup.model import apply_method, load_base_and_method
from finetune.setup.task import make_task
from finetune.tasks import Example
from finetune.train.precision import Hardware, choose_precision, cpu_native_bf16
from tests.conftest import classification_recipe, write_recipe

ROWS = [
    Example(source="the movie was very good", target=("int", "1"), where="row 1"),
    Example(source="bad plot", target=("int", "0"), where="row 2"),
    Example(source="it is a really dull and boring story", target=("int", "0"), where="row 3"),
]
GEN_ROWS = [
    Example(source="a red dog runs in the park", target=["dog runs"], where="row 1"),
    Example(source="the old man walks", target=["man walks"], where="row 2"),
]


def _recipe(model_dir: Path, family: str, method: str, checkpointing: bool) -> Recipe:
    task: dict[str, Any] = {"type": "classification", "text": "text", "label": "label"}
    if family == "t5":  # an encoder-decoder: the generation path checkpoints both stacks
        task = {"type": "summarization", "text": "dialogue", "summary": "summary"}
    return Recipe.model_validate(
        {
            "model": {"name": str(model_dir)},
            "task": task,
            "data": {"train": "unused.csv"},
            "method": {"name": method, **({"dropout": 0.0} if method == "lora" else {})},
            "train": {
                "max_length": 32,
                "max_target_length": 8,
                "gradient_checkpointing": checkpointing,
            },
        }
    )


def _loss_and_grads(model_dir: Path, family: str, method: str, checkpointing: bool):
    import torch

    recipe = _recipe(model_dir, family, method, checkpointing)
    task = make_task(recipe, FAMILIES[family])
    task.tokenizer = load_tokenizer(str(model_dir))
    rows = GEN_ROWS if task.is_generation else ROWS
    if not task.is_generation:
        task.state.labels = ["0", "1"]
    torch.manual_seed(0)  # the same new head / adapter initialisation on both sides
    parts = load_base_and_method(recipe, FAMILIES[family], task)
    model = apply_method(recipe, parts)
    model.train()
    batch = task.collate(task.encode(rows, training=True))
    batch.pop("idx", None)
    torch.manual_seed(1)  # dropout: the non-reentrant checkpoint replays the same RNG state
    loss = model(**batch).loss
    loss.backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad}
    layers = [m for m in model.modules() if getattr(m, "gradient_checkpointing", False)]
    return float(loss.detach()), grads, len(layers)


@pytest.mark.parametrize("family", ["bert", "gpt2", "t5"])
@pytest.mark.parametrize("method", ["lora", "houlsby", "full"])
def test_gradient_checkpointing_keeps_loss_and_gradients(tiny_model_dir, family, method):
    model_dir = tiny_model_dir(family)
    loss, grads, plain_layers = _loss_and_grads(model_dir, family, method, False)
    loss_ckpt, grads_ckpt, ckpt_layers = _loss_and_grads(model_dir, family, method, True)
    assert plain_layers == 0 and ckpt_layers >= 2, "checkpointing was not switched on"
    assert loss_ckpt == pytest.approx(loss, rel=1e-5)
    assert grads.keys() == grads_ckpt.keys() and grads
    for name, grad in grads.items():
        # a frozen backbone under the reentrant checkpoint gives adapters a None/zero gradient
        assert grads_ckpt[name].abs().sum() > 0 or grad.abs().sum() == 0, name
        assert grads_ckpt[name].allclose(grad, rtol=1e-4, atol=1e-6), (
            name,
            (grads_ckpt[name] - grad).abs().max(),
        )


# --------------------------------------------------------------------------- precision: auto

H100 = Hardware(cuda=True, gpu_bf16=True, cpu_bf16=False)
V100 = Hardware(cuda=True, gpu_bf16=False, cpu_bf16=False)
AVX2 = Hardware(cuda=False, gpu_bf16=False, cpu_bf16=False)
SAPPHIRE = Hardware(cuda=False, gpu_bf16=False, cpu_bf16=True)


@pytest.mark.parametrize(
    ("wanted", "family", "hw", "expected"),
    [
        ("auto", "bert", H100, "bf16"),
        ("auto", "t5", H100, "bf16"),
        ("auto", "bert", V100, "fp32"),  # no native bf16: fp32, never fp16 on its own
        ("auto", "t5", V100, "fp32"),  # never fp16 for T5
        ("auto", "gpt2", AVX2, "fp32"),
        ("auto", "gpt2", SAPPHIRE, "bf16"),  # native bf16 on the CPU (AVX512-BF16 / AMX)
        ("auto", "t5", SAPPHIRE, "bf16"),
        ("bf16", "bert", SAPPHIRE, "bf16"),
        ("fp32", "bert", H100, "fp32"),
        ("fp16", "gpt2", V100, "fp16"),
    ],
)
def test_precision_rule(wanted, family, hw, expected):
    assert choose_precision(wanted, ARCHITECTURES[family], hw) == expected


def test_fp16_on_t5_warns_and_fp16_without_cuda_is_refused(caplog):
    from finetune.errors import FinetuneError

    with caplog.at_level("WARNING"):
        assert choose_precision("fp16", ARCHITECTURES["t5"], V100) == "fp16"
    assert "overflow" in caplog.text and "bf16" in caplog.text
    with pytest.raises(FinetuneError, match="needs a CUDA GPU"):
        choose_precision("fp16", ARCHITECTURES["bert"], AVX2)


def test_auto_on_cuda_reaches_accelerate(monkeypatch, tiny_model_dir):
    """make_accelerator's precision comes from the rule with this machine's facts."""
    import finetune.train.precision as precision
    from finetune.setup.accelerator import precision_for

    recipe = _recipe(tiny_model_dir("t5"), "t5", "lora", False)
    monkeypatch.setattr(precision.Hardware, "detect", classmethod(lambda cls: H100))
    assert precision_for(recipe) == "bf16"
    monkeypatch.setattr(precision.Hardware, "detect", classmethod(lambda cls: V100))
    assert precision_for(recipe) == "no"


def test_cpu_bf16_flags_are_read(tmp_path):
    native = tmp_path / "native"
    native.write_text("flags\t: fpu sse2 avx512f avx512_bf16 amx_tile\n")
    assert cpu_native_bf16(native)
    plain = tmp_path / "plain"
    plain.write_text("flags\t: fpu sse2 avx2\n")
    import torch

    emulated = "AMX" not in str(torch.backends.cpu.get_cpu_capability()).upper()
    assert cpu_native_bf16(plain) is (not emulated)


# --------------------------------------------------------------------------- QLoRA refusals


def _qlora_recipe(tmp_path: Path, model_dir: Path, sentiment_files, method: dict) -> Path:
    train, dev = sentiment_files
    data = classification_recipe(model_dir, train, dev, tmp_path / "run", method, epochs=1)
    data["model"]["quantization"] = {"bits": 4}
    return write_recipe(tmp_path / "qlora.yaml", data)


@pytest.mark.parametrize("command", ["validate", "run"])
def test_qlora_without_cuda_exits_2_with_the_reason(
    tmp_path, runner, tiny_model_dir, sentiment_files, command
):
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU: the refusal is for machines without one")
    recipe = _qlora_recipe(tmp_path, tiny_model_dir("bert"), sentiment_files, {"name": "lora"})
    result = runner.invoke(app, [command, str(recipe)])
    assert result.exit_code == 2, result.output
    assert "model.quantization" in result.output
    assert "CUDA GPU" in result.output or "bitsandbytes" in result.output
    assert "Traceback" not in result.output
    assert not (tmp_path / "run" / "metrics.json").exists()


@pytest.mark.parametrize("method", ["houlsby", "full", "ia3"])
def test_qlora_refuses_methods_that_train_the_base(
    tmp_path, runner, tiny_model_dir, sentiment_files, method
):
    recipe = _qlora_recipe(tmp_path, tiny_model_dir("bert"), sentiment_files, {"name": method})
    result = runner.invoke(app, ["validate", str(recipe)])
    assert result.exit_code == 2, result.output
    assert f"method {method} cannot train on a 4-bit base" in result.output
    assert "lora" in result.output  # the fix names the methods that can


def test_qlora_bits_are_4_or_8(tmp_path, runner, tiny_model_dir, sentiment_files):
    recipe = _qlora_recipe(tmp_path, tiny_model_dir("bert"), sentiment_files, {"name": "lora"})
    text = recipe.read_text().replace("bits: 4", "bits: 3")
    recipe.write_text(text)
    result = runner.invoke(app, ["validate", str(recipe)])
    assert result.exit_code == 2 and "model.quantization.bits" in result.output, result.output


def test_qlora_loading_settings():
    """NF4, double quantisation, bf16 compute (QLoRA, Dettmers et al. 2023), or int8."""
    pytest.importorskip("transformers")
    import torch

    from finetune.models.memory import bitsandbytes_config

    try:
        four = bitsandbytes_config(4)
    except ImportError as exc:  # transformers may insist on bitsandbytes to build the config
        pytest.skip(f"BitsAndBytesConfig unavailable here: {exc}")
    assert four.load_in_4bit and four.bnb_4bit_quant_type == "nf4"
    assert four.bnb_4bit_use_double_quant and four.bnb_4bit_compute_dtype == torch.bfloat16
    assert bitsandbytes_config(8).load_in_8bit


def test_merge_of_a_qlora_run_uses_the_full_precision_base(
    tmp_path, runner, tiny_model_dir, sentiment_files
):
    """The merge path of a QLoRA run, on a CPU: its recipe names a 4-bit base, which this
    machine cannot load; merge loads the base in full precision, says so, and folds the adapter
    in (the k-bit training itself needs a GPU: benchmarks/gpu_check.py)."""
    import yaml

    train, dev = sentiment_files
    data = classification_recipe(
        tiny_model_dir("bert"), train, dev, tmp_path / "run", {"name": "lora"}, epochs=1
    )
    result = runner.invoke(app, ["run", str(write_recipe(tmp_path / "r.yaml", data))])
    assert result.exit_code == 0, result.output
    saved = tmp_path / "run" / "recipe.yaml"
    recipe = yaml.safe_load(saved.read_text())
    recipe["model"]["quantization"] = {"bits": 4}  # as a QLoRA run's recipe.yaml says
    saved.write_text(yaml.safe_dump(recipe, sort_keys=False))
    result = runner.invoke(app, ["merge", str(tmp_path / "run"), "--out", str(tmp_path / "m")])
    assert result.exit_code == 0, result.output
    shown = " ".join(result.output.split())  # the log wraps lines at the console width
    assert "de-quantised (full-precision) base" in shown, shown
    assert (tmp_path / "m" / "config.json").exists()


def test_cpu_bf16_detection_can_be_overridden(monkeypatch):
    from finetune.train import precision

    monkeypatch.setattr(precision, "cpu_native_bf16", lambda: False)
    monkeypatch.setenv("FINETUNE_CPU_BF16", "1")
    assert precision.Hardware.detect().cpu_bf16
    monkeypatch.setattr(precision, "cpu_native_bf16", lambda: True)
    monkeypatch.setenv("FINETUNE_CPU_BF16", "0")
    assert not precision.Hardware.detect().cpu_bf16
    monkeypatch.delenv("FINETUNE_CPU_BF16")
    assert precision.Hardware.detect().cpu_bf16


@pytest.mark.parametrize(
    ("family", "task", "method", "expected"),
    [
        ("gpt2", "summarization", "lora", True),  # a decoder's prompt + target: checkpointed
        ("gpt2", "summarization", "prefix", False),  # past key/values do not survive it
        ("gpt2", "classification", "lora", False),  # short inputs
        ("t5", "summarization", "lora", False),  # the decoder sees only the target
    ],
)
def test_auto_checkpointing_only_for_decoder_generation(
    tiny_model_dir, family, task, method, expected
):
    model_dir = tiny_model_dir(family)
    section: dict[str, Any] = {"type": "classification", "text": "text", "label": "label"}
    if task == "summarization":
        section = {"type": "summarization", "text": "dialogue", "summary": "summary"}
    recipe = Recipe.model_validate(
        {
            "model": {"name": str(model_dir)},
            "task": section,
            "data": {"train": "unused.csv"},
            "method": {"name": method},
            "train": {"max_length": 32, "max_target_length": 8},  # checkpointing left at auto
        }
    )
    assert recipe.train.gradient_checkpointing == "auto"
    made = make_task(recipe, FAMILIES[family])
    made.tokenizer = load_tokenizer(str(model_dir))
    if not made.is_generation:
        made.state.labels = ["0", "1"]
    model = apply_method(recipe, load_base_and_method(recipe, FAMILIES[family], made))
    layers = [m for m in model.modules() if getattr(m, "gradient_checkpointing", False)]
    assert bool(layers) == expected


def test_cpu_bf16_choice_is_said_once_a_process(caplog):
    """`predict` over several runs resolves the precision per run: one INFO line, not one each."""
    from finetune.train import precision

    precision._say_cpu_bf16.cache_clear()
    cpu = precision.Hardware(cpu_bf16=True)
    with caplog.at_level(logging.INFO, logger="finetune.train.precision"):
        assert [precision.resolve_precision("auto", None, cpu) for _ in range(3)] == ["bf16"] * 3
    assert sum("computes natively" in r.getMessage() for r in caplog.records) == 1
