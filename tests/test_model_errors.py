"""Model problems: unknown, unreachable offline, or unsupported family.

Every message says which families are supported and how to point model.name at a local
directory; validate finds all of it from config.json alone, run from the first load attempt.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from finetune.cli import app
from tests.conftest import classification_recipe, write_recipe

HELP = (
    "supported architectures (config.json model_type): encoder (bert,",
    "decoder (gpt2,",
    "encoder-decoder (t5, mt5,",
    "save_pretrained",
)


def recipe(tmp_path: Path, sentiment_files: Any, model: str) -> Path:
    train, dev = sentiment_files
    data = classification_recipe(Path(model), train, dev, tmp_path / "run", {"name": "lora"})
    data["model"]["name"] = model
    return write_recipe(tmp_path / "r.yaml", data)


def assert_clear(result: Any, *needles: str) -> None:
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    text = " ".join(result.output.split())  # rich wraps long lines
    for needle in needles:
        assert needle in text, (needle, result.output)


def test_unsupported_family_lists_supported_ones(tmp_path, runner, sentiment_files):
    model = tmp_path / "falcon"
    model.mkdir()
    (model / "config.json").write_text(json.dumps({"model_type": "falcon"}))
    result = runner.invoke(app, ["validate", str(recipe(tmp_path, sentiment_files, str(model)))])
    assert_clear(result, "is a 'falcon' model, which finetune does not support", *HELP)


def test_unknown_hub_id_offline_in_validate(tmp_path, runner, sentiment_files, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    path = recipe(tmp_path, sentiment_files, "nobody-xyz/no-such-model")
    result = runner.invoke(app, ["validate", str(path)])
    assert_clear(result, "cannot tell the family of 'nobody-xyz/no-such-model' offline", *HELP)


def test_unknown_hub_id_offline_in_run(tmp_path, runner, sentiment_files, monkeypatch):
    """The name looks like BERT, so validate guesses the family; run fails at the first load."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    path = recipe(tmp_path, sentiment_files, "nobody-xyz/tiny-bert-missing")
    assert runner.invoke(app, ["validate", str(path)]).exit_code == 0
    result = runner.invoke(app, ["run", str(path), "--no-progress"])
    assert_clear(result, "cannot load 'nobody-xyz/tiny-bert-missing'", "HF_HUB_OFFLINE", *HELP)
    assert "E300" in result.output


@pytest.mark.parametrize(
    "name, needle",
    [
        ("./models/not-here", "local directory ./models/not-here does not exist"),
        ("bundled:nope", "unknown bundled model 'bundled:nope'"),
    ],
)
def test_bad_local_names(tmp_path, runner, sentiment_files, name, needle):
    result = runner.invoke(app, ["validate", str(recipe(tmp_path, sentiment_files, name))])
    assert result.exit_code == 2 and needle in " ".join(result.output.split()), result.output


def test_local_dir_without_config(tmp_path, runner, sentiment_files):
    (tmp_path / "empty-model").mkdir()
    path = recipe(tmp_path, sentiment_files, str(tmp_path / "empty-model"))
    result = runner.invoke(app, ["validate", str(path)])
    assert_clear(result, "is a local path but has no config.json", "save_pretrained")
