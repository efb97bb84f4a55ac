"""Summarization and translation: run -> eval -> predict through the CLI on tiny T5, GPT-2 and
bert2bert, for lora and full; GPT-2 loss masking; batched vs one-by-one generation."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from finetune.cli import app
from tests.conftest import FAMILY_NAMES, write_recipe
from tests.generation_data import summary_rows, translation_rows, write_jsonl

GEN = {"max_new_tokens": 8, "num_beams": 1}


def generation_recipe(model_dir: Path, task: str, tmp_path: Path, method: dict) -> dict:
    """A tiny summarization or translation recipe on toy jsonl data."""
    make = summary_rows if task == "summarization" else translation_rows
    train = write_jsonl(tmp_path / "data" / "train.jsonl", make(48, seed=1))
    dev = write_jsonl(tmp_path / "data" / "dev.jsonl", make(12, seed=2))
    spec = (
        {"type": "summarization", "text": "dialogue", "summary": "summary"}
        if task == "summarization"
        else {"type": "translation", "source_lang": "en", "target_lang": "de"}
    )
    return {
        "model": {"name": str(model_dir)},
        "task": spec,
        "data": {"train": str(train), "eval": str(dev)},
        "method": method,
        "train": {
            "epochs": 1,
            "batch_size": 8,
            "lr": 5e-3,
            "max_length": 48,
            "seed": 0,
            "logging_steps": 2,
            "max_target_length": 16,
        },
        "eval": {"batch_size": 8, "generation": GEN},
        "output": {"dir": str(tmp_path / "run")},
    }


def _invoke(runner, *args):
    result = runner.invoke(app, [str(a) for a in args])
    assert result.exit_code == 0, result.output
    return result


def _jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


@pytest.mark.parametrize("method", ["lora", "full"])
@pytest.mark.parametrize("task", ["summarization", "translation"])
@pytest.mark.parametrize("family", FAMILY_NAMES)
def test_run_eval_predict(family, task, method, tmp_path, runner, tiny_model_dir):
    out = tmp_path / "run"
    recipe = write_recipe(
        tmp_path / "r.yaml",
        generation_recipe(tiny_model_dir(family), task, tmp_path, {"name": method}),
    )
    _invoke(runner, "run", recipe, "--no-progress")
    metrics = json.loads((out / "metrics.json").read_text())
    keys = (
        ("rouge1", "rouge2", "rougeL", "rougeLsum") if task == "summarization" else ("bleu", "chrf")
    )
    for key in keys:
        assert 0.0 <= metrics[key] <= 100.0, key
    if task == "translation":
        assert metrics["bleu_signature"].startswith("nrefs:1|case:mixed|eff:no|tok:13a")
        assert "chrf_signature" in metrics
    assert metrics["samples"] == 12 and metrics["loss"] > 0
    run_info = json.loads((out / "run.json").read_text())
    if family == "bert":
        assert run_info["new_modules"] == [
            "decoder.bert.encoder.layer.0.crossattention",
            "decoder.bert.encoder.layer.1.crossattention",
            "decoder.cls.predictions.transform",
        ]
    # during training only the loss is evaluated (generation is for the end)
    evals = [r for r in _jsonl(out / "log.jsonl") if "eval_loss" in r]
    assert evals and all(not any(k in r for k in ("eval_bleu", "eval_rouge1")) for r in evals)

    saved = _jsonl(out / "predictions.jsonl")
    assert len(saved) == 12 and {"source", "prediction", "reference"} <= set(saved[0])

    # eval reloads the run and reproduces the end-of-training metrics exactly
    _invoke(runner, "eval", out)
    again = json.loads((out / "eval_eval.json").read_text())
    for key in (*keys, "loss"):
        assert again[key] == pytest.approx(metrics[key], abs=1e-6), key

    # predict regenerates the same texts from the sources alone
    sources = [rec["source"] for rec in saved[:4]]
    result = _invoke(runner, "predict", out, *[a for s in sources for a in ("--text", s)])
    lines = [json.loads(line) for line in result.stdout.splitlines() if line.startswith("{")]
    assert [r["prediction"] for r in lines] == [r["prediction"] for r in saved[:4]]
    assert all("reference" not in r for r in lines)


def test_full_t5_learns_translation(tmp_path, runner, tiny_model_dir):
    """Honest end-to-end: a few epochs of full fine-tuning make BLEU clearly non-zero."""
    data = generation_recipe(tiny_model_dir("t5"), "translation", tmp_path, {"name": "full"})
    data["train"].update(epochs=15, lr=1e-2)
    recipe = write_recipe(tmp_path / "r.yaml", data)
    _invoke(runner, "run", recipe, "--no-progress")
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    first = next(r for r in _jsonl(tmp_path / "run" / "log.jsonl") if "eval_loss" in r)
    assert metrics["loss"] < 0.5 * first["eval_loss"]
    assert metrics["bleu"] > 10.0, metrics
