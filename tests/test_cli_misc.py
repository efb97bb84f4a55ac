"""Smaller CLI commands: recipes, options, predict --file, errors for missing inputs."""

from __future__ import annotations

import json

from finetune.cli import app
from tests.conftest import REPO, classification_recipe, write_recipe


def test_recipes_lists_descriptions(runner, monkeypatch):
    monkeypatch.chdir(REPO)
    result = runner.invoke(app, ["recipes"])
    assert result.exit_code == 0
    assert "quickstart.yaml" in result.output and "LoRA on the bundled MiniLM" in result.output


def test_options_of_a_section_a_key_and_a_misspelling(runner):
    result = runner.invoke(app, ["options", "method"])
    assert result.exit_code == 0 and "method.reduction_factor" in result.output
    one = runner.invoke(app, ["options", "train.lr"])
    assert one.exit_code == 0 and "train.lr" in one.output and "train.epochs" not in one.output
    assert "> 0, ≤ 1" in one.output  # the range the schema checks
    wrong = runner.invoke(app, ["options", "trian"])
    assert wrong.exit_code == 2 and "no recipe option 'trian'" in wrong.output
    assert "train" in wrong.output and "Traceback" not in wrong.output


def test_run_takes_set_overrides_as_validate_does(
    tmp_path, runner, tiny_model_dir, sentiment_files
):
    """`--set key=value` reaches the recipe like `key=value` (checked before any training)."""
    train, dev = sentiment_files
    recipe = write_recipe(
        tmp_path / "r.yaml",
        classification_recipe(
            tiny_model_dir("bert"), train, dev, tmp_path / "run", {"name": "lora"}
        ),
    )
    result = runner.invoke(app, ["run", str(recipe), "--set", "train.batch_size=0"])
    assert result.exit_code == 2 and "train.batch_size" in result.output
    both = runner.invoke(app, ["run", str(recipe), "train.epochs=1", "--set", "method.r=0"])
    assert both.exit_code == 2 and "method.r" in both.output and "train.epochs" not in both.output
    assert not (tmp_path / "run").exists()
    # validate's overrides are --set (it takes several recipes): the positional form is named
    wrong = runner.invoke(app, ["validate", str(recipe), "train.epochs=2"])
    assert wrong.exit_code == 2 and "looks like an override" in wrong.output
    assert "--set train.epochs=2" in wrong.output


def test_predict_from_file_and_errors(tmp_path, runner, tiny_model_dir, sentiment_files):
    train, dev = sentiment_files
    out = tmp_path / "run"
    recipe = write_recipe(
        tmp_path / "r.yaml",
        classification_recipe(tiny_model_dir("bert"), train, dev, out, {"name": "lora"}, epochs=1),
    )
    assert runner.invoke(app, ["run", str(recipe), "--no-progress"]).exit_code == 0
    inputs = tmp_path / "inputs.txt"
    inputs.write_text("the movie was good\n\nbad plot\n", encoding="utf-8")
    result = runner.invoke(app, ["predict", str(out), "--file", str(inputs)])
    assert result.exit_code == 0, result.output
    lines = [json.loads(x) for x in result.stdout.splitlines() if x.startswith("{")]
    assert [r["text"] for r in lines] == ["the movie was good", "bad plot"]
    assert all(r["label"] in ("0", "1") and 0.5 <= r["probability"] <= 1 for r in lines)

    result = runner.invoke(app, ["predict", str(out)])
    assert result.exit_code == 2 and "nothing to predict" in result.output
    result = runner.invoke(app, ["predict", str(tmp_path / "nope"), "--text", "x"])
    assert result.exit_code == 2 and "no such run directory" in result.output
    result = runner.invoke(app, ["eval", str(out), "--split", "test"])
    assert result.exit_code == 2 and "data.test" in result.output


def test_relative_data_paths_resolved_in_saved_recipe(
    tmp_path, runner, tiny_model_dir, sentiment_files, monkeypatch
):
    import yaml

    data = classification_recipe(
        tiny_model_dir("bert"),
        "data/train.csv",
        "data/dev.csv",
        tmp_path / "run",
        {"name": "lora"},
        epochs=1,
    )
    recipe = write_recipe(tmp_path / "r.yaml", data)
    monkeypatch.chdir(tmp_path)
    assert runner.invoke(app, ["run", str(recipe), "--no-progress"]).exit_code == 0
    saved = yaml.safe_load((tmp_path / "run" / "recipe.yaml").read_text())
    assert saved["data"]["train"]["path"] == str(tmp_path / "data" / "train.csv")
    monkeypatch.chdir("/")
    result = runner.invoke(app, ["eval", str(tmp_path / "run")])
    assert result.exit_code == 0, result.output
