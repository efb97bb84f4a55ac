"""`finetune compare`: several methods from one recipe -> one table (md/csv/json) and one plot."""

from __future__ import annotations

import csv
import json

from finetune.cli import app
from tests.conftest import classification_recipe, write_recipe


def test_compare_full_lora_and_unsupported(
    tmp_path, runner, tiny_model_dir, sentiment_files, monkeypatch
):
    train, dev = sentiment_files
    recipe = write_recipe(
        tmp_path / "r.yaml",
        classification_recipe(
            tiny_model_dir("bert"), train, dev, tmp_path / "unused", {"name": "lora"}, epochs=1
        ),
    )
    monkeypatch.chdir(tmp_path)
    out = tmp_path / "cmp"
    result = runner.invoke(
        app, ["compare", str(recipe), "--methods", "full,lora,prefix", "--out", str(out)]
    )
    assert result.exit_code == 0, result.output
    rows = {r["method"]: r for r in json.loads((out / "report.json").read_text())}
    assert rows["full"]["status"] == rows["lora"]["status"] == "ok"
    assert rows["prefix"]["status"].startswith("not run")
    assert rows["lora"]["trainable"] < rows["full"]["trainable"] == rows["full"]["total"]
    assert rows["lora"]["artifact_bytes"] < rows["full"]["artifact_bytes"]
    for row in (rows["full"], rows["lora"]):
        assert row["quality_metric"] == "accuracy" and 0 <= row["quality"] <= 1
        assert row["peak_memory_bytes"] > 10_000_000
        # the training time is the run's own (metrics.json), within the method's wall time
        metrics = json.loads((out / row["method"] / "metrics.json").read_text())
        assert row["train_seconds"] == metrics["train_seconds"]
        assert 0 < row["train_seconds"] <= row["wall_seconds"]
    lora_metrics = json.loads((out / "lora" / "metrics.json").read_text())
    assert rows["lora"]["quality"] == lora_metrics["accuracy"]
    assert rows["lora"]["lr"] == 5e-3  # the recipe's own method keeps the recipe's lr
    assert rows["full"]["lr"] == 5e-5
    table = (out / "report.md").read_text()
    assert "| `lora` | 0.005 | accuracy" in table and "| `prefix` | 0.01 | not run" in table
    assert "**Learning rates were not tuned.** Used: full 5e-05 (registry default)" in table
    for row in (rows["full"], rows["lora"]):  # interval, CPU time and load recorded
        assert row["quality_low"] <= row["quality"] <= row["quality_high"]
        assert row["cpu_seconds"] > 0 and row["load_before"] >= 0 and row["cores"] >= 1
    assert [r["method"] for r in csv.DictReader((out / "report.csv").open())] == [
        "full",
        "lora",
        "prefix",
    ]
    assert (out / "report.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_compare_rejects_unknown_method(tmp_path, runner, tiny_model_dir, sentiment_files):
    train, dev = sentiment_files
    recipe = write_recipe(
        tmp_path / "r.yaml",
        classification_recipe(tiny_model_dir("bert"), train, dev, tmp_path / "o", {"name": "lora"}),
    )
    result = runner.invoke(app, ["compare", str(recipe), "--methods", "lora,lorax"])
    assert result.exit_code == 2 and "lorax" in result.output and "houlsby" in result.output
