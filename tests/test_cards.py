"""Model cards (run, merged, adapter) parsed back with huggingface_hub, and `eval.metrics`.

Every card is read with `ModelCard.load` and its metadata compared with what the run knows;
the loading snippets are executed, not just looked at. `eval.metrics` is tested with an
`evaluate` metric module written into the test's directory (works offline).
"""

from __future__ import annotations

import contextlib
import io
import json
import re
from pathlib import Path
from typing import Any

import pytest

from finetune.cli import app
from tests.conftest import classification_recipe, write_csv, write_recipe
from tests.tiny_models import sentiment_rows

METRIC_SCRIPT = '''
import datasets
import evaluate


class SameLabel(evaluate.Metric):
    """Share of predictions equal to the reference, plus a key that collides with a built-in."""

    def _info(self):
        return evaluate.MetricInfo(
            description="share of exact label matches",
            citation="",
            inputs_description="predictions and references: label ids",
            features=datasets.Features(
                {"predictions": datasets.Value("int64"), "references": datasets.Value("int64")}
            ),
        )

    def _compute(self, predictions, references):
        share = sum(p == r for p, r in zip(predictions, references)) / len(predictions)
        return {"same_label": share, "accuracy": share}
'''


def write_metric(directory: Path, name: str = "same_label") -> Path:
    """A local `evaluate` metric: a directory NAME/ holding NAME.py."""
    folder = directory / name
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{name}.py").write_text(METRIC_SCRIPT, encoding="utf-8")
    return folder


@pytest.fixture(scope="module")
def lora_run(tmp_path_factory, tiny_model_dir):
    """One LoRA classification run on tiny GPT-2 with an extra metric from a local directory."""
    from typer.testing import CliRunner

    root = tmp_path_factory.mktemp("cards")
    train = write_csv(root / "data" / "train.csv", sentiment_rows(64, seed=1))
    dev = write_csv(root / "data" / "dev.csv", sentiment_rows(24, seed=2))
    write_metric(root / "metrics")
    data = classification_recipe(
        tiny_model_dir("gpt2"), train, dev, root / "run", {"name": "lora"}, epochs=1
    )
    data["eval"]["metrics"] = ["./metrics/same_label"]  # relative to the recipe's directory
    recipe = write_recipe(root / "r.yaml", data)
    result = CliRunner().invoke(app, ["run", str(recipe), "--no-progress"])
    assert result.exit_code == 0, result.output
    return root / "run"


def load_card(path: Path):
    from huggingface_hub import ModelCard

    return ModelCard.load(path)


def python_snippet(card_text: str) -> str:
    return re.search(r"```python\n(.*?)```", card_text, re.S).group(1)


def run_snippet(code: str) -> str:
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        exec(compile(code, "<card snippet>", "exec"), {})
    return out.getvalue()


def check_eval_results(card, metrics: dict) -> None:
    results = {r.metric_type: r for r in card.data.eval_results}
    assert set(results) == {
        "accuracy",
        "f1_macro",
        "matthews_correlation",
        "f1",
        "same_label",
        "same_label_accuracy",
    }
    for key, result in results.items():
        assert result.metric_value == pytest.approx(metrics[key])
        assert result.task_type == "text-classification"
        assert result.dataset_name == "local file dev.csv" and result.dataset_split == "eval"


# --------------------------------------------------------------------------- eval.metrics


def test_extra_metric_from_local_directory_reaches_metrics_and_card(lora_run):
    metrics = json.loads((lora_run / "metrics.json").read_text())
    # computed on the same predictions as the built-in accuracy; the colliding key is renamed
    assert metrics["same_label"] == pytest.approx(metrics["accuracy"])
    assert metrics["same_label_accuracy"] == pytest.approx(metrics["accuracy"])
    recipe = (lora_run / "recipe.yaml").read_text()
    assert str((lora_run.parent / "metrics" / "same_label").resolve()) in recipe
    card = load_card(lora_run / "README.md")
    assert "same_label" in card.data.metrics


def test_eval_recomputes_extra_metric(lora_run, runner):
    result = runner.invoke(app, ["eval", str(lora_run)])
    assert result.exit_code == 0, result.output
    saved = json.loads((lora_run / "metrics.json").read_text())
    again = json.loads((lora_run / "eval_eval.json").read_text())
    assert again["same_label"] == pytest.approx(saved["same_label"])


def test_hub_metric_offline_fails_early_naming_local_directory(tmp_path, runner, lora_run):
    data = json.loads(json.dumps(_recipe_dict(lora_run)))
    data["eval"]["metrics"] = ["accuracy", str(tmp_path / "no" / "such" / "metric")]
    recipe = write_recipe(tmp_path / "bad.yaml", data)
    result = runner.invoke(app, ["validate", str(recipe)])
    assert result.exit_code == 2
    text = " ".join(result.output.split())
    assert "eval.metrics[0]" in text and "local metric directory" in text
    assert "eval.metrics[1]" in text and "no such metric" in text


def _recipe_dict(run: Path) -> dict:
    import yaml

    data = yaml.safe_load((run / "recipe.yaml").read_text())
    data["output"]["dir"] = str(run.parent / "other")
    return data


def test_generation_references_follow_the_metric_features(tmp_path):
    """Single references as strings, several as lists; a single-reference metric refuses lists."""
    from types import SimpleNamespace

    from finetune.errors import MetricError
    from finetune.tasks.base import Example
    from finetune.tasks.extra_metrics import metric_inputs

    task = SimpleNamespace(is_generation=True)
    one = [Example("a", ["x y"], "row 1"), Example("b", ["z"], "row 2")]
    two = [Example("a", ["x y", "x"], "row 1"), Example("b", ["z"], "row 2")]

    def module(references):
        return SimpleNamespace(name="m", features={"predictions": "s", "references": references})

    strings = module(SimpleNamespace())  # a Value-like feature: one string per example
    lists = module([SimpleNamespace()])  # a list feature: several strings per example
    assert metric_inputs(task, strings, ["p", "q"], one) == (["p", "q"], ["x y", "z"])
    assert metric_inputs(task, lists, ["p", "q"], one) == (["p", "q"], [["x y"], ["z"]])
    assert metric_inputs(task, lists, ["p", "q"], two)[1] == [["x y", "x"], ["z"]]
    with pytest.raises(MetricError, match="one reference per example"):
        metric_inputs(task, strings, ["p", "q"], two)


# --------------------------------------------------------------------------- run and merged cards


def test_run_card_metadata_round_trips(lora_run):
    from finetune.commands.evaluate import predict_texts

    text = (lora_run / "README.md").read_text()
    card = load_card(lora_run / "README.md")
    metrics = json.loads((lora_run / "metrics.json").read_text())
    assert card.data.library_name == "peft"
    assert card.data.pipeline_tag == "text-classification"
    assert card.data.base_model is None and "no Hub id" in text  # a local base model
    assert card.data.datasets is None and "data was local" in text
    assert card.data.license is None  # the tiny base model declares none
    assert {"finetune", "lora", "classification"} <= set(card.data.tags)
    check_eval_results(card, metrics)
    # the body: no link to a PyPI name this project does not own, no dangling sentence, and the
    # quality table separate from the run facts
    assert "pypi.org" not in text and "\n." not in text
    evaluation = text.split("## Evaluation")[1].split("##")[0]
    assert "accuracy" in evaluation and "train_seconds" not in evaluation
    assert "training time (s)" in text.split("## Training\n")[1].split("##")[0]
    # the python snippet loads the adapter with peft and gives the run's own prediction
    printed = run_snippet(python_snippet(text)).split()
    expected = predict_texts(lora_run, ["an input text"])[0]
    assert printed[0] == expected["label"]
    assert float(printed[1]) == pytest.approx(expected["probability"], abs=1e-5)


def test_merged_card_is_a_transformers_card_with_a_working_pipeline(lora_run, tmp_path):
    from finetune.commands.evaluate import predict_texts
    from finetune.commands.merge import merge_run

    merged = tmp_path / "merged"
    merge_run(lora_run, merged)
    card = load_card(merged / "README.md")
    text = (merged / "README.md").read_text()
    assert card.data.library_name == "transformers"  # a merged model needs no peft
    assert card.data.pipeline_tag == "text-classification"
    assert "merged" in card.data.tags
    check_eval_results(card, json.loads((lora_run / "metrics.json").read_text()))
    printed = run_snippet(python_snippet(text))
    expected = predict_texts(lora_run, ["an input text"])[0]
    assert f"'label': '{expected['label']}'" in printed
    score = float(re.search(r"'score': ([0-9.e-]+)", printed).group(1))
    assert score == pytest.approx(expected["probability"], abs=1e-5)


# --------------------------------------------------------------------------- metadata facts


def fake_info(method: str, family: str = "bert", kind: str = "classification") -> Any:
    from finetune.methods import METHODS
    from finetune.run.info import RunInfo

    return RunInfo.model_validate(
        {
            "finetune_version": "0.0.0",
            "versions": {"finetune": "0.0.0", "torch": "2"},
            "architecture": family,
            "task": "classification" if kind == "classification" else "summarization",
            "method": method,
            "model_kind": kind,
            "artifact_dir": METHODS[method].artifact_dir,
            "task_state": {"labels": ["neg", "pos"]},
            "parameters": {"trainable": 10, "total": 1000},
        }
    )


def render_card(recipe: Any, info: Any, *rest: Any) -> str:
    """The card of a made-up run of `info.method`."""
    from finetune.methods import METHODS
    from finetune.run.card import render_model_card

    return render_model_card(recipe, info, METHODS[info.method], *rest)


def recipe_for(model: str, task: dict, data: dict, method: str = "lora"):
    from finetune.recipe.schema import Recipe

    return Recipe.model_validate(
        {"model": {"name": model}, "task": task, "data": data, "method": {"name": method}}
    )


HUB_DATA = {
    "train": {"hub": "glue", "config": "sst2", "split": "train"},
    "eval": {"hub": "glue", "config": "sst2", "split": "validation"},
}
CLASSIFY = {"type": "classification", "text": "sentence", "label": "label"}
METRICS = {
    "loss": 0.3,
    "accuracy": 0.9,
    "f1_macro": 0.88,
    "samples": 872,
    "train_seconds": 12.5,
    "peak_memory_bytes": 1234,
    "artifact_bytes": 99,
    "steps": 10,
    "history": [{"step": 1}],
}


@pytest.mark.parametrize(
    ("method", "kind", "library"),
    [
        ("lora", "run", "peft"),
        ("lora", "adapter", "peft"),
        ("lora", "merged", "transformers"),
        ("full", "adapter", "transformers"),
        ("houlsby", "adapter", None),
        ("bitfit", "run", None),
    ],
)
def test_bundled_model_and_hub_data_metadata(method, kind, library):
    from huggingface_hub import ModelCard

    recipe = recipe_for("bundled:minilm-l6", CLASSIFY, HUB_DATA, method)
    text = render_card(recipe, fake_info(method), METRICS, kind, "me/minilm-sst2")
    card = ModelCard(text)
    assert card.data.library_name == library
    assert card.data.base_model == "sentence-transformers/all-MiniLM-L6-v2"
    assert card.data.license == "apache-2.0"  # from the bundled model's own card
    assert card.data.datasets == ["glue"]
    assert card.data.pipeline_tag == "text-classification"
    results = {r.metric_type: r for r in card.data.eval_results}
    assert set(results) == {"accuracy", "f1_macro"}  # no loss, timings, bytes or counts
    assert results["accuracy"].metric_value == 0.9
    assert results["accuracy"].dataset_type == "glue"
    assert results["accuracy"].dataset_config == "sst2"
    assert results["accuracy"].dataset_split == "validation"
    assert "bundled:" not in str(card.data.to_dict())
    if library is None:
        assert "finetune predict" in text and "own format" in text


@pytest.mark.parametrize("task_type", ["summarization", "translation"])
def test_pipeline_tag_comes_from_the_task_registry(task_type, tmp_path):
    from huggingface_hub import ModelCard

    from finetune.tasks import TASKS

    task = {"summarization": {"type": "summarization", "text": "document", "summary": "summary"}}
    task["translation"] = {"type": "translation", "source_lang": "en", "target_lang": "de"}
    data = {"train": str(tmp_path / "train.csv"), "eval": str(tmp_path / "dev.csv")}
    recipe = recipe_for("t5-small", task[task_type], data)
    metrics = {
        "rougeL": 30.0,
        "bleu": 20.0,
        "bleu_signature": "nrefs:1|tok:13a",
        "gen_len_words": 9,
    }
    text = render_card(recipe, fake_info("lora", "t5", "seq2seq"), metrics, "merged", "out")
    card = ModelCard(text)
    assert card.data.pipeline_tag == TASKS[task_type].pipeline_tag
    assert card.data.language == (["en", "de"] if task_type == "translation" else None)
    assert card.data.base_model == "t5-small"
    assert card.data.datasets is None and "data was local" in text
    assert {r.metric_type for r in card.data.eval_results} == {"rougeL", "bleu"}
    assert "nrefs:1|tok:13a" in text  # the signature is shown, not indexed
    assert "AutoModelForSeq2SeqLM" in python_snippet(text)


def test_local_base_model_hub_id_and_licence_from_its_files(tmp_path):
    from finetune.models.names import hub_id, model_license

    named = tmp_path / "named"
    named.mkdir()
    (named / "config.json").write_text(json.dumps({"_name_or_path": "org/base-model"}))
    (named / "README.md").write_text("---\nlicense: mit\n---\n# a model\n")
    anonymous = tmp_path / "anonymous"
    anonymous.mkdir()
    (anonymous / "config.json").write_text(json.dumps({"_name_or_path": str(anonymous)}))
    assert hub_id(str(named)) == "org/base-model" and model_license(str(named)) == "mit"
    assert hub_id(str(anonymous)) is None and model_license(str(anonymous)) is None
    assert hub_id("bundled:minilm-l6") == "sentence-transformers/all-MiniLM-L6-v2"
    assert hub_id("gpt2") == "gpt2"


# --------------------------------------------------------------------------- generation


TEXT_METRIC_SCRIPT = """
import datasets
import evaluate


class ExactText(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            description="share of generated texts equal to their reference",
            citation="",
            inputs_description="predictions and references: strings",
            features=datasets.Features(
                {"predictions": datasets.Value("string"), "references": datasets.Value("string")}
            ),
        )

    def _compute(self, predictions, references):
        same = [p.strip() == r.strip() for p, r in zip(predictions, references)]
        return {"exact_text": sum(same) / len(same)}
"""


@pytest.mark.slow
@pytest.mark.parametrize("family", ["t5", "gpt2"])
def test_generation_merged_card_snippet_and_text_metric(family, tmp_path, runner, tiny_model_dir):
    """Seq2seq and causal merged cards: the snippet generates what `finetune predict` does."""
    from finetune.commands.evaluate import predict_texts
    from finetune.commands.merge import merge_run
    from tests.test_generation import generation_recipe

    metric = tmp_path / "metrics" / "exact_text"
    metric.mkdir(parents=True)
    (metric / "exact_text.py").write_text(TEXT_METRIC_SCRIPT, encoding="utf-8")
    data = generation_recipe(tiny_model_dir(family), "summarization", tmp_path, {"name": "lora"})
    data["eval"]["metrics"] = [str(metric)]
    result = runner.invoke(app, ["run", str(write_recipe(tmp_path / "g.yaml", data))])
    assert result.exit_code == 0, result.output
    run = tmp_path / "run"
    metrics = json.loads((run / "metrics.json").read_text())
    rows = [json.loads(x) for x in (run / "predictions.jsonl").read_text().splitlines()]
    same = sum(r["prediction"].strip() == r["reference"].strip() for r in rows) / len(rows)
    assert metrics["exact_text"] == pytest.approx(same)
    merge_run(run, tmp_path / "merged")
    card = load_card(tmp_path / "merged" / "README.md")
    assert card.data.pipeline_tag == "summarization" and card.data.library_name == "transformers"
    assert {"rougeL", "exact_text"} <= {r.metric_type for r in card.data.eval_results}
    printed = run_snippet(python_snippet((tmp_path / "merged" / "README.md").read_text()))
    expected = predict_texts(run, ["an input text"])[0]["prediction"]
    assert expected and " ".join(printed.split()) == expected


def test_bert2bert_card_points_to_finetune():
    from huggingface_hub import ModelCard

    task = {"type": "summarization", "text": "document", "summary": "summary"}
    recipe = recipe_for("bert-base-uncased", task, HUB_DATA)
    info = fake_info("lora", "bert", "seq2seq")
    text = render_card(recipe, info, {"rougeL": 1.0}, "adapter", "me/b2b")
    assert ModelCard(text).data.library_name == "peft"
    assert "only finetune rebuilds" in text and "finetune predict" in text
    assert "```python" not in text  # no peft snippet that could not load this model


def test_card_without_eval_data_has_no_results():
    from huggingface_hub import ModelCard

    recipe = recipe_for("gpt2", CLASSIFY, {"train": HUB_DATA["train"]})
    text = render_card(recipe, fake_info("lora", "gpt2"), {"train_loss": 0.5}, "run", "r")
    card = ModelCard(text)
    assert card.data.eval_results is None and "model-index" not in text
    assert "No evaluation data" in text and card.data.datasets == ["glue"]


def test_adapter_stage_names_the_base_hub_id(lora_run, tmp_path, monkeypatch):
    """A pushed peft adapter's config points AutoPeftModel at the base model's Hub id."""
    import finetune.models.names as names
    from finetune.commands.push import stage_adapter

    monkeypatch.setattr(names, "hub_id", lambda name: "org/base")
    stage_adapter(lora_run, tmp_path / "stage", "me/x")
    config = json.loads((tmp_path / "stage" / "adapter" / "adapter_config.json").read_text())
    assert config["base_model_name_or_path"] == "org/base"
    assert load_card(tmp_path / "stage" / "README.md").data.base_model == "org/base"
    original = json.loads((lora_run / "adapter" / "adapter_config.json").read_text())
    assert original["base_model_name_or_path"] != "org/base"  # the run itself is untouched


@pytest.mark.slow
def test_extra_metric_on_two_processes(tmp_path, tiny_model_dir):
    """Each process computes the extra metric on the gathered predictions without cache clashes."""
    import os
    import shutil
    import subprocess
    import sys

    from tests.conftest import REPO

    train = write_csv(tmp_path / "data" / "train.csv", sentiment_rows(32, seed=1))
    dev = write_csv(tmp_path / "data" / "dev.csv", sentiment_rows(20, seed=2))
    write_metric(tmp_path / "metrics")
    data = classification_recipe(
        tiny_model_dir("bert"), train, dev, tmp_path / "run", {"name": "lora"}, epochs=1
    )
    data["eval"]["metrics"] = ["./metrics/same_label"]
    recipe = write_recipe(tmp_path / "r.yaml", data)
    torchrun = shutil.which("torchrun")
    launcher = [torchrun] if torchrun else [sys.executable, "-m", "torch.distributed.run"]
    cmd = [*launcher, "--nproc_per_node", "2", "--master_port", "29541", "-m", "finetune"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    done = subprocess.run(
        [*cmd, "run", str(recipe), "--no-progress"],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert metrics["samples"] == 20
    assert metrics["same_label"] == pytest.approx(metrics["accuracy"])
