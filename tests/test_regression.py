"""The regression task: float targets checked per row, float32 labels counted one per example,
a one-output MSE head that learns, predictions as numbers through run / eval / predict / merge,
and cards the Hub reads as text-classification with pearsonr / spearmanr / mse."""

from __future__ import annotations

import json
import math
import re

import pytest

from finetune.cli import app
from finetune.errors import DataValueError
from finetune.tasks.regression import parse_target
from tests.conftest import write_recipe
from tests.regression_data import regression_recipe, score_files
from tests.test_cards import load_card, python_snippet, run_snippet


@pytest.mark.parametrize(("value", "number"), [("3.800", 3.8), (" 5 ", 5.0), (2, 2.0), (0.5, 0.5)])
def test_targets_are_numbers(value, number):
    assert parse_target(value, "score", "f.tsv line 2") == number


@pytest.mark.parametrize(
    ("value", "says"),
    [("high", "'high', not a finite number"), ("nan", "not a finite"), ("", "is empty"),
     (None, "is empty"), (True, "not a finite")],
)  # fmt: skip
def test_bad_targets_name_the_row_and_column(value, says):
    with pytest.raises(DataValueError) as err:
        parse_target(value, "score", "f.tsv line 7")
    assert err.value.message.startswith("f.tsv line 7: column 'score' (target)")
    assert says in err.value.message


def _task(tiny_model_dir, tmp_path):
    from finetune.models.detect import architecture_named
    from finetune.models.loading import load_tokenizer
    from finetune.recipe.io import build_recipe
    from finetune.setup.task import make_task

    train, dev = score_files(tmp_path, pair=True)
    model = tiny_model_dir("bert")
    data = regression_recipe(model, train, dev, tmp_path / "run", {"name": "lora"}, pair=True)
    recipe, problems = build_recipe(data, "r.yaml", [])
    assert recipe is not None and not problems
    task = make_task(recipe, architecture_named("bert"))
    task.tokenizer = load_tokenizer(str(model))
    return task, recipe


def test_float32_labels_one_token_each_and_exact_in_the_feature_store(tiny_model_dir, tmp_path):
    import torch

    from finetune.data.encoding import encode_features
    from finetune.setup.data import load_splits
    from finetune.train.batching import label_tokens

    task, recipe = _task(tiny_model_dir, tmp_path)
    splits = load_splits(task, recipe, None, stream_train=True)
    assert splits.streamed is not None and len(splits.streamed.firsts) == 1  # scores fit nothing
    examples = splits.eval or []
    features = encode_features(task, examples, training=False, cache=True)
    again = encode_features(task, examples, training=False, cache=True)  # from the cache
    batch = task.collate([again[i] for i in range(4)])
    assert batch["labels"].dtype == torch.float32
    want = torch.tensor([ex.target for ex in examples[:4]], dtype=torch.float32)
    assert torch.equal(batch["labels"], want)
    assert torch.equal(task.collate([features[i] for i in range(4)])["labels"], want)
    counted = label_tokens(batch["labels"], causal=False)
    assert counted.tolist() == [1, 1, 1, 1] and counted.dtype == torch.long
    assert "token_type_ids" in batch  # the BERT pair encoding, as classification's


def test_head_is_one_output_with_mse(tiny_model_dir, tmp_path):
    from finetune.setup.model import load_base_and_method

    task, recipe = _task(tiny_model_dir, tmp_path)
    loaded = load_base_and_method(recipe, task.family, task).loaded
    config = loaded.model.config
    assert (config.num_labels, config.problem_type, config.id2label) == (
        1,
        "regression",
        {0: "score"},
    )
    batch = task.collate(task.encode(task.examples_from_texts(["good film\tthe plot"]), False))
    import torch

    labels = torch.tensor([3.5])
    out = loaded.model(**{k: v for k, v in batch.items() if k != "idx"}, labels=labels)
    assert out.logits.shape == (1, 1)
    assert out.loss.item() == pytest.approx(((out.logits[0, 0] - 3.5) ** 2).item(), rel=1e-5)


@pytest.mark.parametrize(("family", "head"), [("bert", "classifier"), ("t5", "out_proj")])
def test_head_bias_starts_at_the_mean_target(family, head, tiny_model_dir, tmp_path):
    """Without it a short run spends its steps (and Adam's second moments) on the offset."""
    import numpy as np

    from finetune.setup.data import load_splits, train_features
    from finetune.setup.model import load_base_and_method

    task, recipe = _task(tiny_model_dir, tmp_path)
    if family != "bert":
        task, recipe = _retarget(task, recipe, tiny_model_dir(family), family)
    splits = load_splits(task, recipe, None, stream_train=True)
    train = train_features(task, splits, cache=False)
    loaded = load_base_and_method(recipe, task.family, task).loaded
    task.initialise_head(loaded.model, loaded.new_modules, train)
    biases = {
        name: module.bias.item()
        for name, module in loaded.model.named_modules()
        if name.endswith(head) and getattr(module, "out_features", 0) == 1
    }
    targets = [float(r.split("\t")[-1]) for r in recipe_rows(recipe)]
    assert len(biases) == 1 and next(iter(biases.values())) == pytest.approx(np.mean(targets))


def _retarget(task, recipe, model_dir, family):
    from finetune.models.detect import architecture_named
    from finetune.models.loading import load_tokenizer
    from finetune.setup.task import make_task

    recipe = recipe.model_copy(deep=True)
    recipe.model.name = str(model_dir)
    task = make_task(recipe, architecture_named(family))
    task.tokenizer = load_tokenizer(str(model_dir))
    return task, recipe


def recipe_rows(recipe) -> list[str]:
    from pathlib import Path

    return Path(recipe.data.train.path).read_text().splitlines()[1:]


def test_score_head_computes_in_float32_under_bf16_autocast(tiny_model_dir, tmp_path):
    """Under autocast a plain head would return bf16 scores, on a 1/64 grid near 3."""
    import torch

    from finetune.setup.model import load_base_and_method

    task, recipe = _task(tiny_model_dir, tmp_path)
    model = load_base_and_method(recipe, task.family, task).loaded.model.eval()
    head = model.classifier
    with torch.no_grad():
        head.bias.fill_(2.7)  # a typical STS-B score: not a bf16 number
    batch = task.collate(task.encode(task.examples_from_texts(["good film\tthe plot"]), False))
    inputs = {k: v for k, v in batch.items() if k != "idx"}
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        logits = model(**inputs).logits
    assert logits.dtype == torch.float32
    assert logits[0, 0].item() != logits[0, 0].to(torch.bfloat16).float().item()
    assert "classifier.weight" in model.state_dict()  # the checkpoint keys are transformers'
    plain = torch.nn.Linear(head.in_features, 1)
    plain.load_state_dict(head.state_dict())
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        assert plain(torch.ones(1, head.in_features)).dtype == torch.bfloat16  # what it fixes


@pytest.fixture(scope="module")
def full_run(tmp_path_factory, tiny_model_dir):
    """Full fine-tuning of the tiny BERT on learnable scores: enough steps to learn them."""
    from typer.testing import CliRunner

    root = tmp_path_factory.mktemp("regression")
    train, dev = score_files(root)
    data = regression_recipe(
        tiny_model_dir("bert"), train, dev, root / "run", {"name": "full"}, epochs=10,
        lr=1e-3, batch_size=8,
    )  # fmt: skip
    result = CliRunner().invoke(app, ["run", str(write_recipe(root / "r.yaml", data))])
    assert result.exit_code == 0, result.output
    return root / "run"


def test_regression_learns_and_reports_numbers(full_run, runner):
    metrics = json.loads((full_run / "metrics.json").read_text())
    assert metrics["pearson"] > 0.5 and metrics["spearmanr"] > 0.5  # random is about 0
    assert math.isclose(metrics["loss"], metrics["mse"], rel_tol=1e-4)  # the loss is the MSE
    assert metrics["best_metric"] == "eval_pearson"
    assert not (full_run / "classification_report.json").exists()
    records = [json.loads(x) for x in (full_run / "predictions.jsonl").read_text().splitlines()]
    assert all(isinstance(r["score"], float) and isinstance(r["reference"], float) for r in records)
    result = runner.invoke(app, ["predict", str(full_run), "--text", "a superb film"])
    assert result.exit_code == 0, result.output
    line = json.loads(result.output.strip().splitlines()[-1])
    assert set(line) == {"text", "score"} and isinstance(line["score"], float)
    result = runner.invoke(app, ["eval", str(full_run)])
    assert result.exit_code == 0, result.output
    again = json.loads((full_run / "eval_eval.json").read_text())
    assert again["pearson"] == pytest.approx(metrics["pearson"], abs=1e-6)


def test_regression_cards_and_merged_pipeline_give_the_score(full_run, tmp_path):
    from finetune.commands.evaluate import predict_texts
    from finetune.commands.merge import merge_run

    card = load_card(full_run / "README.md")
    assert card.data.pipeline_tag == "text-classification"  # what the Hub uses for regression
    results = {r.metric_type: r for r in card.data.eval_results}
    assert list(results) == ["pearsonr", "spearmanr", "mse"]  # the main metric first
    assert {r.task_type for r in results.values()} == {"text-classification"}
    assert card.data.metrics == ["pearsonr", "spearmanr", "mse"]
    expected = predict_texts(full_run, ["an input text"])[0]["score"]
    snippet = python_snippet((full_run / "README.md").read_text())
    assert float(run_snippet(snippet).split()[-1]) == pytest.approx(expected, abs=1e-4)
    merged = tmp_path / "merged"
    merge_run(full_run, merged)
    printed = run_snippet(python_snippet((merged / "README.md").read_text()))
    score = float(re.search(r"'score': ([0-9.e-]+)", printed).group(1))
    assert "'label': 'score'" in printed and score == pytest.approx(expected, abs=1e-4)


def test_lora_adapter_card_snippet_loads_the_regression_head(tmp_path, runner, tiny_model_dir):
    from finetune.commands.evaluate import predict_texts

    train, dev = score_files(tmp_path)
    data = regression_recipe(tiny_model_dir("gpt2"), train, dev, tmp_path / "run", {"name": "lora"})
    data["train"].update(max_steps=3)
    result = runner.invoke(app, ["run", str(write_recipe(tmp_path / "r.yaml", data))])
    assert result.exit_code == 0, result.output
    text = (tmp_path / "run" / "README.md").read_text()
    assert 'problem_type="regression"' in text and "library_name: peft" in text
    expected = predict_texts(tmp_path / "run", ["an input text"])[0]["score"]
    assert float(run_snippet(python_snippet(text)).split()[-1]) == pytest.approx(expected, abs=1e-4)


def test_extra_metrics_get_numbers(tiny_model_dir, tmp_path):
    from finetune.tasks.extra_metrics import metric_inputs

    task, _recipe = _task(tiny_model_dir, tmp_path)
    examples = task.examples_from_texts(["a\tb", "c\td"])
    examples[0].target, examples[1].target = 1.5, 4.0
    assert metric_inputs(task, None, [1.25, 3.5], examples) == ([1.25, 3.5], [1.5, 4.0])


@pytest.mark.slow
def test_compare_ranks_regression_by_pearson_with_an_interval(tmp_path, runner, tiny_model_dir):
    """compare on a regression recipe: pearson from run.json, its bootstrap interval; with
    task.metric=mse the lowest MSE is best."""
    train, dev = score_files(tmp_path)
    data = regression_recipe(tiny_model_dir("bert"), train, dev, tmp_path / "x", {"name": "lora"})
    data["train"].update(max_steps=4)
    recipe = write_recipe(tmp_path / "r.yaml", data)
    for metric, out in (("pearson", tmp_path / "cmp"), ("mse", tmp_path / "cmp-mse")):
        args = ["compare", str(recipe), f"task.metric={metric}", "--methods", "full,lora"]
        result = runner.invoke(app, [*args, "--out", str(out)])
        assert result.exit_code == 0, result.output
        rows = {r["method"]: r for r in json.loads((out / "report.json").read_text())}
        for row in rows.values():
            assert row["quality_metric"] == metric
            assert row["quality_low"] <= row["quality"] <= row["quality_high"]
        best = next(r for r in rows.values() if r["verdict"] == "best")
        pick = max if metric == "pearson" else min
        assert best["quality"] == pick(r["quality"] for r in rows.values())
