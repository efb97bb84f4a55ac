"""`finetune merge-adapters`: LoRA runs combined into a normal run directory.

A linear (or cat) merge of an adapter with itself at 0.5 + 0.5 must predict exactly what the
adapter predicts; a merge of two different adapters must change the outputs; the new run
directory must work with eval, predict and merge; runs that cannot be combined are refused
with a message naming each run.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from finetune.cli import app
from tests.conftest import classification_recipe, write_recipe
from tests.test_generation import generation_recipe


def _train(runner, tmp_path, name, recipe) -> Path:
    out = tmp_path / name
    recipe["output"] = {"dir": str(out)}
    path = write_recipe(tmp_path / f"{name}.yaml", recipe)
    result = runner.invoke(app, ["run", str(path), "--no-progress"])
    assert result.exit_code == 0, result.output
    return out


def classifier_run(runner, tmp_path, tiny_model_dir, sentiment_files, name, method, seed=0):
    train, dev = sentiment_files
    recipe = classification_recipe(
        tiny_model_dir("bert"), train, dev, tmp_path / name, method, max_steps=4, seed=seed
    )
    return _train(runner, tmp_path, name, recipe)


def _probabilities(path: Path) -> list[float]:
    return [json.loads(line)["probability"] for line in path.read_text().splitlines()]


@pytest.fixture(scope="module")
def lora_runs(tmp_path_factory, tiny_model_dir):
    """Two LoRA runs (seeds 0 and 1) shared by the tests that only read them."""
    from typer.testing import CliRunner

    from tests.conftest import write_csv
    from tests.tiny_models import sentiment_rows

    root = tmp_path_factory.mktemp("lora-runs")
    files = (
        write_csv(root / "data" / "train.csv", sentiment_rows(96, seed=1)),
        write_csv(root / "data" / "dev.csv", sentiment_rows(40, seed=2)),
    )
    method = {"name": "lora", "r": 4, "dropout": 0.0}
    runs = []
    for name, seed in (("a", 0), ("b", 1)):
        recipe = classification_recipe(
            tiny_model_dir("bert"), *files, root / name, method, max_steps=4, seed=seed
        )
        recipe["data"]["cache"] = False  # module scope: outside the per-test feature cache
        runs.append(_train(CliRunner(), root, name, recipe))
    return tuple(runs)


def merge_adapters(runner, *args):
    return runner.invoke(app, ["merge-adapters", *[str(a) for a in args]])


@pytest.mark.parametrize("how", ["linear", "cat"])
def test_self_merge_at_half_and_half_predicts_as_the_adapter(how, runner, tmp_path, lora_runs):
    a, _ = lora_runs
    out = tmp_path / "merged"
    result = merge_adapters(runner, a, a, "--weights", "0.5,0.5", "--how", how, "--out", out)
    assert result.exit_code == 0, result.output
    assert _probabilities(out / "predictions_eval.jsonl") == pytest.approx(
        _probabilities(a / "predictions.jsonl"), abs=1e-5
    )
    rank = json.loads((out / "adapter" / "adapter_config.json").read_text())["r"]
    assert rank == (8 if how == "cat" else 4)
    provenance = json.loads((out / "merged_from.json").read_text())
    assert provenance["how"] == how and provenance["weights"] == [0.5, 0.5]
    # a normal run directory: eval, predict and merge take it
    assert runner.invoke(app, ["eval", str(out)]).exit_code == 0
    predicted = runner.invoke(app, ["predict", str(out), "--text", "a good movie"])
    assert predicted.exit_code == 0, predicted.output
    merged = runner.invoke(app, ["merge", str(out), "--out", str(tmp_path / "plain")])
    assert merged.exit_code == 0, merged.output


@pytest.mark.parametrize("how", ["linear", "ties", "dare_ties", "cat"])
def test_merging_two_different_adapters_changes_the_outputs(how, runner, tmp_path, lora_runs):
    a, b = lora_runs
    out = tmp_path / "merged"
    result = merge_adapters(runner, a, b, "--how", how, "--density", "0.5", "--out", out)
    assert result.exit_code == 0, result.output
    got = _probabilities(out / "predictions_eval.jsonl")
    for run in (a, b):
        assert got != pytest.approx(_probabilities(run / "predictions.jsonl"), abs=1e-4)


def test_rslora_self_merge_keeps_its_scaling(runner, tmp_path, tiny_model_dir, sentiment_files):
    method = {"name": "rslora", "r": 4, "dropout": 0.0}
    a = classifier_run(runner, tmp_path, tiny_model_dir, sentiment_files, "a", method)
    out = tmp_path / "merged"
    assert merge_adapters(runner, a, a, "--out", out).exit_code == 0
    assert _probabilities(out / "predictions_eval.jsonl") == pytest.approx(
        _probabilities(a / "predictions.jsonl"), abs=1e-5
    )


def test_generation_self_merge(runner, tmp_path, tiny_model_dir):
    recipe = generation_recipe(
        tiny_model_dir("t5"), "summarization", tmp_path, {"name": "lora", "dropout": 0.0}
    )
    recipe["train"]["max_steps"] = 3
    recipe["eval"]["generation"] = {"max_new_tokens": 4, "num_beams": 1}
    a = _train(runner, tmp_path, "a", recipe)
    out = tmp_path / "merged"
    assert merge_adapters(runner, a, a, "--out", out).exit_code == 0
    before = json.loads((a / "metrics.json").read_text())
    after = json.loads((out / "eval_eval.json").read_text())
    assert after["loss"] == pytest.approx(before["loss"], abs=1e-5)


def test_refuses_runs_of_different_methods(runner, tmp_path, tiny_model_dir, sentiment_files):
    a = classifier_run(runner, tmp_path, tiny_model_dir, sentiment_files, "a", {"name": "lora"})
    b = classifier_run(runner, tmp_path, tiny_model_dir, sentiment_files, "b", {"name": "dora"})
    result = merge_adapters(runner, a, b, "--out", tmp_path / "m")
    assert result.exit_code == 2
    text = " ".join(result.output.split())
    assert "method" in text and "lora" in text and "dora" in text
    assert not (tmp_path / "m").exists()


def test_refuses_runs_on_different_bases(runner, tmp_path, tiny_model_dir, sentiment_files):
    train, dev = sentiment_files
    a = classifier_run(runner, tmp_path, tiny_model_dir, sentiment_files, "a", {"name": "lora"})
    recipe = classification_recipe(
        tiny_model_dir("gpt2"), train, dev, tmp_path / "b", {"name": "lora"}, max_steps=2
    )
    b = _train(runner, tmp_path, "b", recipe)
    result = merge_adapters(runner, a, b, "--out", tmp_path / "m")
    assert result.exit_code == 2
    text = "".join(result.output.split())  # rich wraps long paths
    assert "basemodel" in text and str(a).replace(" ", "") in text
    assert str(b).replace(" ", "") in text


def test_refuses_methods_without_arithmetic(runner, tmp_path, tiny_model_dir, sentiment_files):
    a = classifier_run(runner, tmp_path, tiny_model_dir, sentiment_files, "a", {"name": "ia3"})
    result = merge_adapters(runner, a, a, "--out", tmp_path / "m")
    assert result.exit_code == 2 and "add_weighted_adapter" in result.output


def test_refuses_different_ranks_for_linear_but_not_cat(
    runner, tmp_path, lora_runs, tiny_model_dir, sentiment_files
):
    a, _ = lora_runs
    c = classifier_run(
        runner, tmp_path, tiny_model_dir, sentiment_files, "c", {"name": "lora", "r": 2}
    )
    result = merge_adapters(runner, a, c, "--how", "linear", "--out", tmp_path / "m")
    assert result.exit_code == 2 and "--how cat" in result.output
    assert merge_adapters(runner, a, c, "--how", "cat", "--out", tmp_path / "m").exit_code == 0


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (["--weights", "1"], "1 weights for 2 runs"),
        (["--weights", "a,b"], "not a comma-separated"),
        (["--how", "svd"], "unknown combination"),
    ],
)
def test_refuses_bad_options(args, words, runner, tmp_path, lora_runs):
    a, b = lora_runs
    result = merge_adapters(runner, a, b, *args, "--out", tmp_path / "m")
    assert result.exit_code == 2 and words in " ".join(result.output.split())


def test_per_module_ranks_merge_with_cat_only(runner, tmp_path, tiny_model_dir, sentiment_files):
    method = {"name": "lora", "r": 4, "dropout": 0.0, "rank_pattern": {"value": 2}}
    a = classifier_run(runner, tmp_path, tiny_model_dir, sentiment_files, "a", method)
    refused = merge_adapters(runner, a, a, "--how", "linear", "--out", tmp_path / "m")
    assert refused.exit_code == 2 and "rank_pattern" in " ".join(refused.output.split())
    out = tmp_path / "cat"
    assert merge_adapters(runner, a, a, "--how", "cat", "--out", out).exit_code == 0
    assert _probabilities(out / "predictions_eval.jsonl") == pytest.approx(
        _probabilities(a / "predictions.jsonl"), abs=1e-5
    )
