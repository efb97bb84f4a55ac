"""Issue #17.1 (best weights, early stopping) and #17.2 (trackers, curves.png)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from finetune.cli import app
from finetune.recipe.schema import Recipe
from finetune.train.selection import BestRule, Selection, best_rule, check_selection
from tests.conftest import classification_recipe, write_recipe

SUMMARIZATION = {"type": "summarization", "text": "dialogue", "summary": "summary"}


def _recipe(task: dict | None = None, eval_data: bool = True, **train) -> Recipe:
    data = classification_recipe(Path("m"), Path("t.csv"), Path("d.csv"), Path("o"), {}, **train)
    data["method"] = {"name": "lora"}
    if task is not None:
        data["task"] = task
    if not eval_data:
        del data["data"]["eval"]
    return Recipe.model_validate(data)


# --------------------------------------------------------------------------- the rule


def test_auto_metric_is_the_tasks_main_metric_or_eval_loss():
    rule = best_rule(_recipe())
    assert (rule.metric, rule.mode) == ("accuracy", "max")
    # generation tasks compute ROUGE only with eval.generate_during_training: loss otherwise
    summ = _recipe(SUMMARIZATION)
    rule = best_rule(summ)
    assert (rule.metric, rule.mode) == ("loss", "min")
    assert "generate_during_training" in rule.why
    summ.eval.generate_during_training = True
    assert (best_rule(summ).metric, best_rule(summ).mode) == ("rougeL", "max")
    # any name, with or without the eval_ prefix; a loss is minimised unless told otherwise
    assert best_rule(_recipe(best_metric="eval_loss")).mode == "min"
    assert best_rule(_recipe(best_metric="f1_macro")).metric == "f1_macro"
    assert best_rule(_recipe(best_metric="loss", best_mode="max")).mode == "max"


def test_validate_names_selection_problems_before_training():
    where = "r.yaml"
    assert check_selection(_recipe(), where) == []
    # select_best defaults to "when there is eval data": no problem without eval data
    assert check_selection(_recipe(eval_data=False), where) == []
    keys = [
        p.where
        for p in check_selection(
            _recipe(eval_data=False, select_best=True, early_stopping_patience=2), where
        )
    ]
    assert keys == ["r.yaml: train.select_best", "r.yaml: train.early_stopping_patience"]
    problems = check_selection(_recipe(SUMMARIZATION, best_metric="rougeL"), where)
    assert len(problems) == 1 and "generate_during_training=true" in problems[0].fix


# --------------------------------------------------------------------------- the decisions


def _linear():
    import torch

    torch.manual_seed(0)
    return torch.nn.Linear(2, 1)


def test_selection_keeps_best_weights_counts_patience_and_round_trips():
    import torch

    model = _linear()
    sel = Selection(BestRule("accuracy", "max", ""), True, patience=2, delta=0.05)
    assert not sel.update(1, {"eval_accuracy": 0.5}, model)
    best = model.weight.detach().clone()
    with torch.no_grad():
        model.weight.add_(1.0)
    assert not sel.update(2, {"eval_accuracy": 0.54}, model)  # within min_delta: no gain
    state = sel.state_dict()
    again = Selection(BestRule("accuracy", "max", ""), True, patience=2, delta=0.05)
    again.load_state_dict(state)
    assert (again.best_step, again.bad_evals) == (1, 1)
    assert again.update(3, {"eval_accuracy": float("nan")}, model)  # 2nd without gain: stop
    assert again.restore(model) and torch.equal(model.weight, best)
    assert again.summary()["best_step"] == 1 and again.summary()["best_metric"] == "eval_accuracy"


def test_selection_minimises_and_rejects_an_unknown_metric():
    from finetune.errors import RecipeError

    sel = Selection(BestRule("loss", "min", ""), False, patience=5, delta=0.0)
    for step, loss in ((1, 0.9), (2, 0.7), (3, 0.8)):
        assert not sel.update(step, {"eval_loss": loss}, _linear())
    assert (sel.best_step, sel.best_value, sel.weights) == (2, 0.7, None)
    wrong = Selection(BestRule("rougeL", "max", ""), True, patience=None, delta=0.0)
    with pytest.raises(RecipeError) as excinfo:
        wrong.update(1, {"step": 1, "eval_loss": 0.5, "eval_samples": 3}, _linear())
    assert "use one of: auto, loss" in excinfo.value.render()


# --------------------------------------------------------------------------- real runs


def _metrics(run: Path) -> dict:
    return json.loads((run / "metrics.json").read_text())


def _run_cli(runner, recipe: Path, *extra: str) -> None:
    result = runner.invoke(app, ["run", str(recipe), "--no-progress", *extra])
    assert result.exit_code == 0, result.output


def test_best_weights_are_kept_evaluated_and_plotted_with_tensorboard(
    tmp_path, runner, tiny_model_dir, sentiment_files
):
    """Eval loss rises on this toy run after the first evaluation: the kept adapter is the
    first evaluation's, metrics.json reports it (and `finetune eval` reproduces it), the
    curves and the TensorBoard events hold the whole run."""
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from finetune.commands.evaluate import evaluate_run

    train, dev = sentiment_files
    out = tmp_path / "run"
    data = classification_recipe(
        tiny_model_dir("bert"),
        train,
        dev,
        out,
        {"name": "lora"},
        eval_steps=2,
        best_metric="loss",
        report_to=["tensorboard"],
    )
    _run_cli(runner, write_recipe(tmp_path / "r.yaml", data))
    metrics = _metrics(out)
    history = metrics["eval_history"]
    assert [r["step"] for r in history] == list(range(2, metrics["steps"] + 1, 2))
    best = min(history, key=lambda r: r["eval_loss"])
    assert metrics["best_step"] == best["step"] != metrics["steps"], history
    assert metrics["select_best"] is True and metrics["best_mode"] == "min"
    assert metrics["loss"] == pytest.approx(best["eval_loss"], abs=1e-6)
    assert metrics["loss"] < history[-1]["eval_loss"]
    assert evaluate_run(out)["loss"] == pytest.approx(metrics["loss"], abs=1e-6)
    png = (out / "curves.png").read_bytes()
    assert png.startswith(b"\x89PNG") and len(png) > 5000
    # TensorBoard's own reader: the loss curve at log.jsonl's steps, eval loss, hyperparameters
    logged = [json.loads(x) for x in (out / "log.jsonl").read_text().splitlines()]
    train_steps = [r["step"] for r in logged if "loss" in r]
    events = EventAccumulator(str(out / "trackers" / "run"))
    events.Reload()
    scalars = events.Tags()["scalars"]
    assert "train/loss" in scalars and "eval/loss" in scalars and "eval/accuracy" in scalars
    curve = events.Scalars("train/loss")
    assert [e.step for e in curve] == train_steps
    assert [e.value for e in curve] == pytest.approx([r["loss"] for r in logged if "loss" in r])
    assert [e.step for e in events.Scalars("eval/loss")] == [r["step"] for r in history]
    hparams = next((out / "trackers" / "run").rglob("hparams.yml")).read_text()
    assert "train.best_metric: loss" in hparams and "method.name: lora" in hparams


def test_early_stopping_stops_after_patience_evaluations(
    tmp_path, runner, tiny_model_dir, sentiment_files
):
    train, dev = sentiment_files
    out = tmp_path / "run"
    data = classification_recipe(
        tiny_model_dir("bert"),
        train,
        dev,
        out,
        {"name": "lora"},
        eval_steps=2,
        early_stopping_patience=2,
        early_stopping_min_delta=10.0,  # nothing after the first evaluation counts as a gain
    )
    _run_cli(runner, write_recipe(tmp_path / "r.yaml", data))
    metrics = _metrics(out)
    assert metrics["stopped_early"] is True
    assert metrics["steps"] == 6 and metrics["best_step"] == 2
    assert [r["step"] for r in metrics["eval_history"]] == [2, 4, 6]
    assert metrics["best_metric"] == "eval_accuracy"


@pytest.mark.slow
def test_best_so_far_survives_an_interruption(
    tmp_path, runner, tiny_model_dir, sentiment_files, monkeypatch
):
    """Interrupted after the step-4 checkpoint (best: step 2), the resumed run keeps step 2's
    weights, which exist only in that checkpoint: the same adapter as an uninterrupted run."""
    from safetensors.torch import load_file

    import finetune.train.loop as loop

    train, dev = sentiment_files
    opts = {"eval_steps": 2, "save_steps": 4, "best_metric": "loss"}
    model = tiny_model_dir("bert-nodropout")
    method = {"name": "lora", "dropout": 0.0}
    a = classification_recipe(model, train, dev, tmp_path / "a", method, **opts)
    _run_cli(runner, write_recipe(tmp_path / "a.yaml", a))
    b = classification_recipe(model, train, dev, tmp_path / "b", method, **opts)
    recipe_b = write_recipe(tmp_path / "b.yaml", b)
    original = loop.save_checkpoint

    def crash_after_save(*args, **kwargs):
        original(*args, **kwargs)
        raise KeyboardInterrupt

    monkeypatch.setattr(loop, "save_checkpoint", crash_after_save)
    assert runner.invoke(app, ["run", str(recipe_b), "--no-progress"]).exit_code != 0
    monkeypatch.setattr(loop, "save_checkpoint", original)
    _run_cli(runner, recipe_b, "--resume")
    ma, mb = _metrics(tmp_path / "a"), _metrics(tmp_path / "b")
    assert ma["best_step"] == mb["best_step"] < 4
    assert mb["loss"] == pytest.approx(ma["loss"], abs=1e-6)
    assert [r["step"] for r in mb["eval_history"]] == [r["step"] for r in ma["eval_history"]]
    wa = load_file(tmp_path / "a" / "adapter" / "adapter_model.safetensors")
    wb = load_file(tmp_path / "b" / "adapter" / "adapter_model.safetensors")
    for key in wa:
        assert (wa[key] - wb[key]).abs().max() < 1e-6, key


# --------------------------------------------------------------------------- trackers, layout


def test_tracker_names_are_accelerates():
    import typing

    from accelerate.tracking import LOGGER_TYPE_TO_CLASS

    from finetune.recipe.sections import TrackerName
    from finetune.run.trackers import PACKAGES

    assert set(typing.get_args(TrackerName)) == set(LOGGER_TYPE_TO_CLASS) == set(PACKAGES)
    # the command line's short forms
    assert _recipe(report_to="tensorboard,mlflow").train.report_to == ["tensorboard", "mlflow"]
    assert _recipe(report_to="tensorboard").train.report_to == ["tensorboard"]
    assert _recipe().train.report_to == []


def test_missing_tracker_package_fails_validate_with_the_pip_line(
    tmp_path, runner, tiny_model_dir, sentiment_files, monkeypatch
):
    import finetune.run.trackers as trackers

    real = trackers.importlib.util.find_spec
    monkeypatch.setattr(
        trackers.importlib.util,
        "find_spec",
        lambda name, *a: None if name == "mlflow" else real(name, *a),
    )
    train, dev = sentiment_files
    data = classification_recipe(
        tiny_model_dir("bert"), train, dev, tmp_path / "run", {"name": "lora"}, report_to=["mlflow"]
    )
    result = runner.invoke(app, ["validate", str(write_recipe(tmp_path / "r.yaml", data))])
    assert result.exit_code == 2
    assert "train.report_to" in result.output and "pip install mlflow" in result.output


def test_curves_from_a_log_with_a_torn_line(tmp_path):
    from finetune.run.curves import eval_history, write_curves

    log = tmp_path / "log.jsonl"
    lines = [
        {"step": 1, "loss": 0.9},
        {"step": 2, "loss": 0.8},
        {"step": 2, "epoch": 0, "eval_loss": 0.85, "eval_rougeL": 0.1},
        {"step": 2, "epoch": 0, "eval_loss": 0.84, "eval_rougeL": 0.2},  # resumed: last wins
    ]
    log.write_text("".join(json.dumps(r) + "\n" for r in lines) + '{"step": 3, "lo')
    assert eval_history(log) == [lines[3]]
    assert write_curves(log, tmp_path / "curves.png", "rougeL", best_step=2)
    assert (tmp_path / "curves.png").read_bytes().startswith(b"\x89PNG")
    assert not write_curves(tmp_path / "missing.jsonl", tmp_path / "none.png", "rougeL")


def test_curves_and_trackers_are_named_in_the_layout_and_the_readme():
    from finetune.run.layout import CURVES, TRACKERS
    from tests.conftest import REPO

    readme = (REPO / "README.md").read_text()
    assert f"| `{CURVES}` |" in readme and f"| `{TRACKERS}/` |" in readme


@pytest.mark.slow
def test_two_processes_stop_and_keep_the_same_step(tmp_path):
    """On 2 processes every rank decides from the gathered metrics: both stop at step 4 (a
    rank that went on would leave the other waiting in a collective, and the run would hang
    until the timeout), checkpoints hold the selection on both, and the kept step is 2."""
    from tests import test_correctness_multiprocess as mp
    from tests.tiny_models import build_gpt2

    model = build_gpt2(tmp_path / "gpt2")
    recipe = mp._recipe(
        tmp_path,
        model,
        "two",
        eval_steps=2,
        save_steps=2,
        early_stopping_patience=2,
        early_stopping_min_delta=10.0,
    )
    rc, output = mp._run(tmp_path, recipe, 2, 29547)
    assert rc == 0, output[-3000:]
    metrics = _metrics(tmp_path / "two")
    assert metrics["stopped_early"] is True and metrics["steps"] == 6
    assert metrics["best_step"] == 2 and metrics["best_metric"] == "eval_loss"
    assert [r["step"] for r in metrics["eval_history"]] == [2, 4, 6]
    assert metrics["loss"] == pytest.approx(metrics["eval_history"][0]["eval_loss"], abs=1e-6)


def _tracked_run(tmp_path, runner, tiny_model_dir, sentiment_files, tracker: str) -> Path:
    train, dev = sentiment_files
    out = tmp_path / "run"
    data = classification_recipe(
        tiny_model_dir("bert"), train, dev, out, {"name": "lora"}, epochs=1, report_to=[tracker]
    )
    _run_cli(runner, write_recipe(tmp_path / "r.yaml", data))
    return out


@pytest.mark.slow
def test_mlflow_file_store_holds_the_loss_curve(
    tmp_path, runner, tiny_model_dir, sentiment_files, monkeypatch
):
    """Only where mlflow is installed (it is not in CI: too many dependencies for a test)."""
    mlflow = pytest.importorskip("mlflow")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", (tmp_path / "mlruns").as_uri())
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")  # mlflow 3.x: file store opt-in
    out = _tracked_run(tmp_path, runner, tiny_model_dir, sentiment_files, "mlflow")
    client = mlflow.tracking.MlflowClient()
    experiment = client.get_experiment_by_name("run")
    (found,) = client.search_runs([experiment.experiment_id])
    logged = [json.loads(x) for x in (out / "log.jsonl").read_text().splitlines()]
    history = client.get_metric_history(found.info.run_id, "train/loss")
    assert [m.step for m in history] == [r["step"] for r in logged if "loss" in r]
    assert found.data.params["method.name"] == "lora"


@pytest.mark.slow
def test_wandb_offline_run_is_written(
    tmp_path, runner, tiny_model_dir, sentiment_files, monkeypatch
):
    """Only where wandb is installed; offline mode, nothing leaves the machine."""
    pytest.importorskip("wandb")
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_DIR", str(tmp_path))
    _tracked_run(tmp_path, runner, tiny_model_dir, sentiment_files, "wandb")
    assert list((tmp_path / "wandb").glob("offline-run-*/run-*.wandb"))
