"""run -> eval -> predict through the CLI on tiny BERT, GPT-2 and T5, for lora and full."""

from __future__ import annotations

import json

import pytest

from finetune.cli import app
from tests.conftest import FAMILY_NAMES, classification_recipe, write_csv, write_recipe


def _run(runner, recipe, *extra):
    result = runner.invoke(app, ["run", str(recipe), "--no-progress", *extra])
    assert result.exit_code == 0, result.output
    return result


@pytest.mark.parametrize("method", ["lora", "full"])
@pytest.mark.parametrize("family", FAMILY_NAMES)
def test_run_eval_predict(family, method, tmp_path, runner, tiny_model_dir, sentiment_files):
    run_eval_predict(family, method, "fp32", tmp_path, runner, tiny_model_dir, sentiment_files)


@pytest.mark.parametrize("family", FAMILY_NAMES)
def test_run_eval_predict_bf16(family, tmp_path, runner, tiny_model_dir, sentiment_files):
    """Under bf16 autocast the frozen weights are stored in bf16 (in training, the base; in
    eval and predict, every weight): the reloaded run still reproduces the metrics exactly."""
    run_eval_predict(family, "lora", "bf16", tmp_path, runner, tiny_model_dir, sentiment_files)


def run_eval_predict(family, method, precision, tmp_path, runner, tiny_model_dir, files):
    train, dev = files
    out = tmp_path / "run"
    data = classification_recipe(tiny_model_dir(family), train, dev, out, {"name": method})
    data["train"]["precision"] = precision
    recipe = write_recipe(tmp_path / "r.yaml", data)
    _run(runner, recipe)
    for name in (
        "recipe.yaml",
        "run.json",
        "metrics.json",
        "log.jsonl",
        "README.md",
        "predictions.jsonl",
        "tokenizer",
        ".finished",
    ):
        assert (out / name).exists(), name
    artifact = out / ("model" if method == "full" else "adapter")
    assert any(artifact.glob("*.safetensors"))
    metrics = json.loads((out / "metrics.json").read_text())
    assert 0.0 <= metrics["accuracy"] <= 1.0 and metrics["samples"] == 40
    logs = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    assert any("loss" in rec and "lr" in rec for rec in logs)
    assert any("eval_accuracy" in rec for rec in logs)

    # eval reloads the saved run and reproduces the end-of-training metrics exactly
    result = runner.invoke(app, ["eval", str(out)])
    assert result.exit_code == 0, result.output
    again = json.loads((out / "eval_eval.json").read_text())
    assert again["accuracy"] == metrics["accuracy"] and again["loss"] == metrics["loss"]

    # predict on the dev texts gives the same labels/probabilities as training-time predictions
    saved = [json.loads(line) for line in (out / "predictions.jsonl").read_text().splitlines()]
    texts = [rec["text"] for rec in saved[:5]]
    args = ["predict", str(out)] + [arg for t in texts for arg in ("--text", t)]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    lines = [json.loads(line) for line in result.stdout.splitlines() if line.startswith("{")]
    assert [r["label"] for r in lines] == [r["label"] for r in saved[:5]]
    for got, want in zip(lines, saved[:5]):
        assert got["probability"] == pytest.approx(want["probability"], abs=1e-5)


@pytest.mark.parametrize("family", FAMILY_NAMES)
def test_lora_backbone_bit_identical_and_head_trains(
    family, tmp_path, tiny_model_dir, sentiment_files, monkeypatch
):
    import finetune.commands.run as command
    import finetune.pipeline.training as pipeline

    captured = {}
    original = pipeline.fit

    def spy(model, *args, **kwargs):
        frozen = {n: p.detach().clone() for n, p in model.named_parameters() if not p.requires_grad}
        trained = {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}
        result = original(model, *args, **kwargs)
        after = dict(model.named_parameters())
        captured["frozen_same"] = all(torch_equal(after[n], v) for n, v in frozen.items())
        captured["changed"] = [n for n, v in trained.items() if not torch_equal(after[n], v)]
        captured["n_frozen"] = len(frozen)
        return result

    monkeypatch.setattr(pipeline, "fit", spy)
    train, dev = sentiment_files
    recipe = write_recipe(
        tmp_path / "r.yaml",
        classification_recipe(
            tiny_model_dir(family), train, dev, tmp_path / "run", {"name": "lora"}
        ),
    )
    command.run(recipe, progress=False)
    assert captured["n_frozen"] > 10 and captured["frozen_same"]
    changed = " ".join(captured["changed"])
    assert "lora_" in changed and "modules_to_save" in changed  # adapter and head both learned


def torch_equal(a, b) -> bool:
    import torch

    return bool(torch.equal(a.detach(), b))


def test_adapter_loads_with_peft_from_pretrained(tmp_path, runner, tiny_model_dir, sentiment_files):
    import torch
    from peft import PeftModel
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    train, dev = sentiment_files
    out = tmp_path / "run"
    model_dir = tiny_model_dir("gpt2")
    recipe = write_recipe(
        tmp_path / "r.yaml", classification_recipe(model_dir, train, dev, out, {"name": "lora"})
    )
    _run(runner, recipe)
    tokenizer = AutoTokenizer.from_pretrained(out / "tokenizer")
    base = AutoModelForSequenceClassification.from_pretrained(
        model_dir, num_labels=2, pad_token_id=tokenizer.pad_token_id
    )
    model = PeftModel.from_pretrained(base, out / "adapter").eval()
    saved = [json.loads(line) for line in (out / "predictions.jsonl").read_text().splitlines()]
    with torch.no_grad():
        for rec in saved[:4]:
            probs = torch.softmax(model(**tokenizer(rec["text"], return_tensors="pt")).logits, -1)
            assert float(probs.max()) == pytest.approx(rec["probability"], abs=1e-5)
            assert str(int(probs.argmax())) == rec["label"]


def test_string_labels_map_to_ids(tmp_path, runner, tiny_model_dir):
    from tests.tiny_models import sentiment_rows

    def rows(n, seed):
        return [
            {"review": r["text"], "sentiment": "pos" if r["label"] else "neg"}
            for r in sentiment_rows(n, seed)
        ]

    train = write_csv(tmp_path / "train.csv", rows(64, 3))
    dev = write_csv(tmp_path / "dev.csv", rows(16, 4))
    data = classification_recipe(
        tiny_model_dir("bert"), train, dev, tmp_path / "run", {"name": "lora"}, epochs=1
    )
    data["task"] = {"type": "classification", "text": "review", "label": "sentiment"}
    _run(runner, write_recipe(tmp_path / "r.yaml", data))
    info = json.loads((tmp_path / "run" / "run.json").read_text())
    assert info["task_state"]["labels"] == ["neg", "pos"]
    result = runner.invoke(app, ["predict", str(tmp_path / "run"), "--text", "good movie"])
    label = json.loads(result.stdout.splitlines()[-1])["label"]
    assert label in ("neg", "pos")


def test_finished_run_is_never_overwritten(tmp_path, runner, tiny_model_dir, sentiment_files):
    train, dev = sentiment_files
    recipe = write_recipe(
        tmp_path / "r.yaml",
        classification_recipe(
            tiny_model_dir("bert"), train, dev, tmp_path / "run", {"name": "lora"}, epochs=1
        ),
    )
    _run(runner, recipe)
    before = (tmp_path / "run" / "metrics.json").read_text()
    result = runner.invoke(app, ["run", str(recipe), "--no-progress"])
    assert (
        result.exit_code == 2 and "finished run" in result.output and "--overwrite" in result.output
    )
    assert (tmp_path / "run" / "metrics.json").read_text() == before
    _run(runner, recipe, "--overwrite", "train.seed=5")
    assert "seed: 5" in (tmp_path / "run" / "recipe.yaml").read_text()


def test_resume_continues_from_checkpoint(
    tmp_path, runner, tiny_model_dir, sentiment_files, monkeypatch
):
    """Interrupt after the first checkpoint; --resume finishes with the same weights, on a
    model with dropout (issue #13: the dropout masks after a resume are the uninterrupted
    run's, so model, optimizer, schedule, batch order and random state are all restored)."""
    from safetensors.torch import load_file

    import finetune.train.loop as train_mod

    train, dev = sentiment_files
    data = classification_recipe(
        tiny_model_dir("bert"),
        train,
        dev,
        tmp_path / "a",
        {"name": "lora", "dropout": 0.1},
        epochs=2,
        save_steps=4,
    )
    straight = write_recipe(tmp_path / "a.yaml", data)
    _run(runner, straight)
    data["output"]["dir"] = str(tmp_path / "b")
    resumed = write_recipe(tmp_path / "b.yaml", data)
    original = train_mod.save_checkpoint

    def crash_after_save(*args, **kwargs):
        original(*args, **kwargs)
        raise KeyboardInterrupt

    monkeypatch.setattr(train_mod, "save_checkpoint", crash_after_save)
    result = runner.invoke(app, ["run", str(resumed), "--no-progress"])
    assert result.exit_code != 0 and not (tmp_path / "b" / ".finished").exists()
    monkeypatch.setattr(train_mod, "save_checkpoint", original)
    result = runner.invoke(app, ["run", str(resumed), "--no-progress"])
    assert result.exit_code == 2 and "--resume" in result.output
    _run(runner, resumed, "--resume")
    a = load_file(tmp_path / "a" / "adapter" / "adapter_model.safetensors")
    b = load_file(tmp_path / "b" / "adapter" / "adapter_model.safetensors")
    assert a.keys() == b.keys()
    for key in a:
        assert torch_allclose(a[key], b[key]), key


def torch_allclose(a, b) -> bool:
    import torch

    return bool(torch.allclose(a, b, atol=1e-6))
