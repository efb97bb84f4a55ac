"""LoRA's initialisations (`method.init`), per-module ranks, and the LoRA+ / LoRA-FA optimizers.

Each init trains a few steps through `finetune run`; its saved adapter must then load in plain
peft (`PeftModel.from_pretrained` on the unmodified base, nothing from finetune) and give the
training-time predictions, and `finetune merge` must pass its parity check. PiSSA, OLoRA and
CorDA modify the base weights in training, so this also proves peft's conversion at save.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from finetune.cli import app
from tests.conftest import classification_recipe, write_recipe

INITS = [
    {"init": "gaussian"},
    {"init": "orthogonal"},
    {"init": "pissa"},
    {"init": "pissa", "pissa_iters": 2},
    {"init": "olora"},
    {"init": "eva", "init_batches": 3},
    {"init": "corda", "init_batches": 3},
]


def train(runner, tmp_path, tiny_model_dir, sentiment_files, method, **train_opts) -> Path:
    train_file, dev = sentiment_files
    out = tmp_path / "run"
    data = classification_recipe(
        tiny_model_dir("bert"),
        train_file,
        dev,
        out,
        {"name": "lora", "r": 4, "alpha": 8, "dropout": 0.0, **method},
        epochs=1,
        max_steps=4,
        **train_opts,
    )
    result = runner.invoke(
        app, ["run", str(write_recipe(tmp_path / "r.yaml", data)), "--no-progress"]
    )
    assert result.exit_code == 0, result.output
    return out


def plain_peft_probabilities(run: Path, base_dir: Path) -> list[float]:
    """The eval rows' top-class probabilities from peft and transformers alone."""
    import torch
    from peft import PeftModel
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    base = AutoModelForSequenceClassification.from_pretrained(base_dir, num_labels=2)
    model = PeftModel.from_pretrained(base, str(run / "adapter")).eval()
    tokenizer = AutoTokenizer.from_pretrained(run / "tokenizer")
    rows = [json.loads(line) for line in (run / "predictions.jsonl").read_text().splitlines()]
    out = []
    with torch.no_grad():
        for row in rows:
            inputs = tokenizer(row["text"], return_tensors="pt", truncation=True, max_length=32)
            out.append(float(torch.softmax(model(**inputs).logits, -1).max()))
    return out


@pytest.mark.parametrize("method", INITS, ids=lambda m: "-".join(str(v) for v in m.values()))
def test_init_reloads_in_plain_peft_and_merges_exactly(
    method, tmp_path, runner, tiny_model_dir, sentiment_files
):
    out = train(runner, tmp_path, tiny_model_dir, sentiment_files, method)
    saved = json.loads((out / "adapter" / "adapter_config.json").read_text())
    if method["init"] in ("pissa", "olora", "corda"):
        # converted onto the original weights: [A | A0], [B | -B0]
        assert saved["r"] == 8 and saved["init_lora_weights"] is True
    rows = [json.loads(line) for line in (out / "predictions.jsonl").read_text().splitlines()]
    got = plain_peft_probabilities(out, tiny_model_dir("bert"))
    assert got == pytest.approx([r["probability"] for r in rows], abs=1e-5)
    merged = runner.invoke(app, ["merge", str(out), "--out", str(tmp_path / "merged")])
    assert merged.exit_code == 0, merged.output


def test_pissa_modifies_the_base_and_the_conversion_undoes_it(tiny_model_dir):
    """Without the conversion the trained adapter would not fit the original weights: PiSSA
    really moves the top singular directions out of the base weight."""
    import torch

    from finetune.methods import METHODS
    from tests.test_methods import ctx_for, load, method_config

    loaded, _ = load(tiny_model_dir, "bert")
    before = {n: p.detach().clone() for n, p in loaded.model.named_parameters()}
    cfg = method_config("lora", r=4, init="pissa")
    model = METHODS["lora"].apply(loaded.model, ctx_for(loaded, "bert", "classification", cfg))
    changed = [
        n
        for n, p in model.named_parameters()
        if "base_layer.weight" in n
        and not torch.equal(
            p, before[n.replace("base_model.model.", "").replace(".base_layer", "")]
        )
    ]
    assert changed and all(("query" in n or "value" in n) for n in changed)


def test_rank_pattern_sets_per_module_ranks(tmp_path, runner, tiny_model_dir, sentiment_files):
    from safetensors import safe_open

    out = train(runner, tmp_path, tiny_model_dir, sentiment_files, {"rank_pattern": {"value": 2}})
    with safe_open(str(out / "adapter" / "adapter_model.safetensors"), framework="pt") as f:
        shapes = {k: f.get_slice(k).get_shape() for k in f.keys() if "lora_A" in k}  # noqa: SIM118
    assert {s[0] for k, s in shapes.items() if ".value." in k} == {2}
    assert {s[0] for k, s in shapes.items() if ".query." in k} == {4}


@pytest.mark.parametrize(
    ("method", "key", "words"),
    [
        ({"name": "lora", "r": 3, "init": "orthogonal"}, "method.r", "even"),
        ({"name": "dora", "init": "pissa"}, "method.init", "DoRA"),
        ({"name": "lora", "init": "loftq"}, "method.init", "4-bit"),
        ({"name": "ia3"}, "train.optimizer", "ia3"),
        ({"name": "dora"}, "train.optimizer", "dora"),
    ],
)
def test_validate_refuses_what_cannot_work(
    method, key, words, tmp_path, runner, tiny_model_dir, sentiment_files
):
    train_file, dev = sentiment_files
    opts = {"optimizer": "lorafa"} if key == "train.optimizer" else {}
    data = classification_recipe(
        tiny_model_dir("bert"), train_file, dev, tmp_path / "o", method, **opts
    )
    result = runner.invoke(app, ["validate", str(write_recipe(tmp_path / "r.yaml", data))])
    assert result.exit_code == 2, result.output
    assert key in result.output and words in result.output


def test_loftq_refuses_on_a_cpu_only_install(tmp_path, runner, tiny_model_dir, sentiment_files):
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    train_file, dev = sentiment_files
    data = classification_recipe(
        tiny_model_dir("bert"), train_file, dev, tmp_path / "o", {"name": "lora", "init": "loftq"}
    )
    data["model"]["quantization"] = {"bits": 4}
    result = runner.invoke(app, ["validate", str(write_recipe(tmp_path / "r.yaml", data))])
    assert result.exit_code == 2
    assert "method.init" in result.output and "CUDA" in result.output


# --------------------------------------------------------------------------- optimizers


def test_loraplus_trains_b_faster_and_keeps_the_head_rate(tiny_model_dir):
    from finetune.methods import METHODS
    from finetune.recipe.sections import TrainConfig
    from finetune.train.optim import build_optimizer
    from tests.test_methods import ctx_for, load, method_config

    loaded, _ = load(tiny_model_dir, "bert")
    cfg = method_config("lora", r=4)
    model = METHODS["lora"].apply(loaded.model, ctx_for(loaded, "bert", "classification", cfg))
    train = TrainConfig(lr=1e-3, optimizer="loraplus", loraplus_lr_ratio=16, new_modules_lr=3e-3)
    optimizer = build_optimizer(model, train, list(loaded.new_modules))
    rate = {name: group["lr"] for group in optimizer.param_groups for name in group["names"]}
    assert {r for n, r in rate.items() if "lora_A" in n} == {1e-3}
    assert [r for n, r in rate.items() if "lora_B" in n] == pytest.approx([1.6e-2] * 4)
    assert {r for n, r in rate.items() if "modules_to_save" in n} == {3e-3}
    assert len(rate) == sum(1 for p in model.parameters() if p.requires_grad)


def test_lorafa_keeps_a_frozen_and_trains_b(tmp_path, runner, tiny_model_dir, sentiment_files):
    import torch
    from safetensors.torch import load_file

    from finetune.methods import METHODS

    seen: dict = {}
    original = METHODS["lora"].apply

    def spy(model, ctx):
        wrapped = original(model, ctx)
        seen.update({n: p.detach().clone() for n, p in wrapped.named_parameters() if "lora_" in n})
        seen["trainable"] = sum(p.numel() for p in wrapped.parameters() if p.requires_grad)
        return wrapped

    METHODS["lora"].apply = spy  # type: ignore[method-assign]
    try:
        out = train(runner, tmp_path, tiny_model_dir, sentiment_files, {}, optimizer="lorafa")
    finally:
        del METHODS["lora"].apply
    saved = load_file(str(out / "adapter" / "adapter_model.safetensors"))
    trainable = seen.pop("trainable")
    for key, value in saved.items():
        if "lora_" not in key:
            continue
        start = seen[key.replace(".weight", ".default.weight")]
        if "lora_A" in key:
            assert torch.equal(value, start), key
        else:
            assert not torch.equal(value, start), key
    info = json.loads((out / "run.json").read_text())
    a_count = sum(v.numel() for k, v in seen.items() if "lora_A" in k)
    assert a_count and info["parameters"]["trainable"] == trainable - a_count  # A not counted


@pytest.mark.slow
@pytest.mark.parametrize("init", ["pissa", "eva", "corda"])
@pytest.mark.parametrize(("family", "task"), [("gpt2", "summarization"), ("bert", "translation")])
def test_data_and_residual_inits_on_generation_models(
    init, family, task, tmp_path, runner, tiny_model_dir
):
    """The decoder (GPT-2's left context, a causal LM) and bert2bert (new cross-attention in
    modules_to_save, kept through the conversion): `eval` reproduces the run, merge is exact."""
    from tests.test_generation import generation_recipe
    from tests.test_methods_matrix import check_merge, check_reload

    method = {"name": "lora", "r": 4, "dropout": 0.0, "init": init, "init_batches": 2}
    data = generation_recipe(tiny_model_dir(family), task, tmp_path, method)
    data["train"].update(max_steps=3)
    data["eval"]["generation"] = {"max_new_tokens": 4, "num_beams": 1}
    data["data"]["max_eval_samples"] = 6
    out = tmp_path / "run"
    result = runner.invoke(
        app, ["run", str(write_recipe(tmp_path / "r.yaml", data)), "--no-progress"]
    )
    assert result.exit_code == 0, result.output
    check_reload(runner, out, task)
    check_merge(runner, out, tmp_path / "merged")
