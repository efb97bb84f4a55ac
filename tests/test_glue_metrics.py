"""GLUE's metrics (Matthews correlation, the positive class's F1, Pearson / Spearman) against
scikit-learn and scipy, `task.metric`, and the chosen main metric everywhere it is used:
best-weights selection, run.json, compare's quality column, its bootstrap intervals (recomputed
per resample, not averaged per example) and the model card."""

from __future__ import annotations

import json
import random
from typing import get_args

import numpy as np
import pytest

from finetune.cli import app
from finetune.comparison.intervals import resample_indices, run_scores
from finetune.comparison.runner import higher_is_better, quality_key, row_from_run
from finetune.recipe.io import build_recipe
from finetune.tasks.classification import ClassificationConfig
from finetune.tasks.main_metric import lower_is_better, main_metric
from finetune.tasks.regression import RegressionConfig
from finetune.tasks.scores import (
    CLASSIFICATION_METRICS,
    REGRESSION_METRICS,
    classification_scores,
    positive_label,
    regression_scores,
)
from finetune.train.selection import best_rule
from tests.conftest import classification_recipe, write_recipe


@pytest.mark.parametrize(
    ("labels", "positive"),
    [
        (["0", "1"], "1"),
        (["-1", "1"], "1"),
        (["false", "true"], "true"),
        (["No", "Yes"], "Yes"),
        (["negative", "positive"], "positive"),
        (["ham", "spam"], "spam"),  # no positive name: the second label
        (["0", "1", "2"], None),  # not a two-label task
    ],
)
def test_positive_label(labels, positive):
    assert positive_label(labels) == positive


def test_task_metric_choices_are_the_metrics_the_tasks_compute():
    choices = get_args(ClassificationConfig.model_fields["metric"].annotation)
    assert choices == ("auto", *CLASSIFICATION_METRICS)
    assert get_args(RegressionConfig.model_fields["metric"].annotation) == (
        "auto",
        *REGRESSION_METRICS,
    )


def test_classification_scores_equal_sklearn():
    from sklearn.metrics import f1_score, matthews_corrcoef

    rng = random.Random(0)
    truth = [rng.randint(0, 1) for _ in range(300)]
    pred = [t if rng.random() < 0.8 else 1 - t for t in truth]
    scores = classification_scores(truth, pred, positive=1)
    assert scores["matthews_correlation"] == pytest.approx(matthews_corrcoef(truth, pred))
    assert scores["f1"] == pytest.approx(f1_score(truth, pred))
    three = classification_scores([0, 1, 2, 2], [0, 2, 2, 1], positive=None)
    assert "f1" not in three and set(three) == {"accuracy", "f1_macro", "matthews_correlation"}


def test_regression_scores_equal_scipy_and_are_null_when_undefined():
    from scipy.stats import pearsonr, spearmanr

    rng = np.random.default_rng(0)
    truth = rng.uniform(0, 5, 200)
    pred = truth + rng.normal(0, 1, 200)
    scores = regression_scores(list(truth), list(pred))
    assert scores["pearson"] == pytest.approx(pearsonr(truth, pred)[0])
    assert scores["spearmanr"] == pytest.approx(spearmanr(truth, pred)[0])
    assert scores["mse"] == pytest.approx(float(np.mean((truth - pred) ** 2)))
    constant = regression_scores([1.0, 2.0, 3.0], [2.0, 2.0, 2.0])
    assert constant["pearson"] is None and constant["spearmanr"] is None  # not NaN in JSON
    assert constant["mse"] == pytest.approx(2 / 3)


def _recipe_dict(tmp_path, tiny_model_dir, sentiment_files, **task) -> dict:
    train, dev = sentiment_files
    data = classification_recipe(
        tiny_model_dir("bert"), train, dev, tmp_path / "run", {"name": "lora", "r": 4}
    )
    data["task"].update(task)
    return data


def test_task_metric_is_validated_and_picks_the_best_weights(
    tmp_path, runner, tiny_model_dir, sentiment_files
):
    bad = _recipe_dict(tmp_path, tiny_model_dir, sentiment_files, metric="pearson")
    result = runner.invoke(app, ["validate", str(write_recipe(tmp_path / "bad.yaml", bad))])
    assert result.exit_code == 2
    assert "task.metric" in result.output and "'matthews_correlation'" in result.output
    data = _recipe_dict(tmp_path, tiny_model_dir, sentiment_files, metric="matthews_correlation")
    recipe, problems = build_recipe(data, "r.yaml", [])
    assert recipe is not None and not problems
    assert main_metric(recipe.task) == "matthews_correlation"
    rule = best_rule(recipe)
    assert (rule.metric, rule.mode) == ("matthews_correlation", "max")
    data["task"] = {"type": "regression", "text": "text", "label": "label", "metric": "mse"}
    recipe, _ = build_recipe(data, "r.yaml", [])
    assert (best_rule(recipe).metric, best_rule(recipe).mode) == ("mse", "min")
    assert lower_is_better("mse") and lower_is_better("eval_loss") and not higher_is_better("mse")


def test_f1_needs_two_labels(tmp_path, runner, tiny_model_dir):
    from tests.conftest import write_csv

    rows = [{"text": f"word {i} and more", "label": i % 3} for i in range(30)]
    train = write_csv(tmp_path / "three.csv", rows)
    data = classification_recipe(tiny_model_dir("bert"), train, train, tmp_path / "run", {})
    data["method"] = {"name": "lora", "r": 4}
    data["task"]["metric"] = "f1"
    result = runner.invoke(app, ["run", str(write_recipe(tmp_path / "r.yaml", data))])
    assert result.exit_code == 2
    assert "task.metric: f1" in result.output and "3 labels" in result.output


@pytest.fixture(scope="module")
def mcc_run(tmp_path_factory, tiny_model_dir):
    """A classification run whose main metric is Matthews correlation."""
    from typer.testing import CliRunner

    from tests.conftest import write_csv
    from tests.tiny_models import sentiment_rows

    root = tmp_path_factory.mktemp("mcc")
    train = write_csv(root / "train.csv", sentiment_rows(96, seed=1))
    dev = write_csv(root / "dev.csv", sentiment_rows(60, seed=2))
    data = classification_recipe(
        tiny_model_dir("bert"), train, dev, root / "run", {"name": "full"}, lr=1e-3
    )
    data["task"]["metric"] = "matthews_correlation"
    result = CliRunner().invoke(app, ["run", str(write_recipe(root / "r.yaml", data))])
    assert result.exit_code == 0, result.output
    return root / "run"


def test_chosen_metric_reaches_run_json_compare_and_the_card(mcc_run):
    from huggingface_hub import ModelCard

    metrics = json.loads((mcc_run / "metrics.json").read_text())
    assert json.loads((mcc_run / "run.json").read_text())["main_metric"] == "matthews_correlation"
    assert metrics["best_metric"] == "eval_matthews_correlation"
    assert {"accuracy", "f1_macro", "matthews_correlation", "f1"} <= set(metrics)
    row = row_from_run("full", "run", mcc_run, None, None)
    assert row.quality_metric == "matthews_correlation"
    assert row.quality == metrics["matthews_correlation"]
    assert quality_key(metrics) == "accuracy"  # a run without run.json's main metric
    card = ModelCard.load(mcc_run / "README.md")
    assert card.data.eval_results[0].metric_type == "matthews_correlation"  # listed first
    assert card.data.pipeline_tag == "text-classification"


def test_bootstrap_recomputes_mcc_and_f1_on_each_resample(mcc_run):
    from sklearn.metrics import f1_score, matthews_corrcoef

    records = [json.loads(x) for x in (mcc_run / "predictions.jsonl").read_text().splitlines()]
    truth = [r["reference"] for r in records]
    pred = [r["label"] for r in records]
    samples = resample_indices(len(records), resamples=5, seed=3)
    mcc, f1 = run_scores(mcc_run, "matthews_correlation"), run_scores(mcc_run, "f1")
    assert mcc is not None and f1 is not None
    for idx in [list(range(len(records))), *samples]:
        t, p = [truth[i] for i in idx], [pred[i] for i in idx]
        assert mcc.value(idx) == pytest.approx(matthews_corrcoef(t, p))
        assert f1.value(idx) == pytest.approx(f1_score(t, p, pos_label="1", zero_division=0))
    macro = run_scores(mcc_run, "f1_macro")
    assert macro is not None
    metrics = json.loads((mcc_run / "metrics.json").read_text())
    assert macro.value(list(range(len(records)))) == pytest.approx(metrics["f1_macro"])


def test_bootstrap_recomputes_correlations(tmp_path):
    from scipy.stats import pearsonr, spearmanr

    from finetune.run.layout import RunPaths

    rng = np.random.default_rng(1)
    truth = np.round(rng.uniform(0, 5, 80), 1)  # ties: Spearman ranks each resample again
    pred = truth + rng.normal(0, 1, 80)
    lines = [
        json.dumps({"text": "t", "score": float(p), "reference": float(t)})
        for t, p in zip(truth, pred)
    ]
    RunPaths(tmp_path).predictions.write_text("\n".join(lines) + "\n")
    for idx in [list(range(80)), *resample_indices(80, resamples=5, seed=4)]:
        pearson, spearman = run_scores(tmp_path, "pearson"), run_scores(tmp_path, "spearmanr")
        mse = run_scores(tmp_path, "mse")
        assert pearson is not None and spearman is not None and mse is not None
        assert pearson.value(idx) == pytest.approx(pearsonr(truth[idx], pred[idx])[0])
        assert spearman.value(idx) == pytest.approx(spearmanr(truth[idx], pred[idx])[0])
        assert mse.value(idx) == pytest.approx(float(np.mean((truth[idx] - pred[idx]) ** 2)))
