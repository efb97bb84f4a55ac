"""Every method x family x task that the support table claims, end to end through the CLI.

Each case trains a few steps with `finetune run`, then checks that the loss is finite, that the
only base parameters that changed are the ones the method may change (new modules, BitFit's
biases, everything for `full`), that the method's own parameters did train, and that
`finetune eval` on the saved run (a fresh base model + `Method.load`) reproduces the
training-time predictions exactly. A method that trains nothing (the zero-shot baseline) must
change no parameter and save no weights, and `eval` must reproduce it too. Unsupported
combinations must be refused by `validate`.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from finetune.cli import app
from finetune.docs.methods import support_matrix
from finetune.methods import METHODS
from finetune.methods.base import inside
from finetune.models import FAMILIES
from finetune.recipe.schema import TASK_TYPES
from tests.conftest import classification_recipe, write_recipe
from tests.regression_data import regression_recipe, score_files
from tests.test_generation import generation_recipe

METHOD_OPTIONS = {
    "lora": {"r": 4},
    "dora": {"r": 4},
    "rslora": {"r": 4},
    "prefix": {"num_virtual_tokens": 4},
    "prompt": {"num_virtual_tokens": 4},
    "houlsby": {"reduction_factor": 8},
    "pfeiffer": {"reduction_factor": 8},
    "loha": {"r": 4},
    "lokr": {"r": 4},
    "vera": {"r": 16},
    "adalora": {"init_r": 4, "target_r": 2, "warmup": 0.25, "final": 0.25},
    "randlora": {"r": 8},
    "vblora": {"r": 2, "num_vectors": 16, "vector_length": 16},
    "fourierft": {"n_frequency": 64},
    "oft": {"block_size": 8},
    "hra": {"r": 4},
    "ptuning": {"num_virtual_tokens": 4, "encoder_hidden_size": 16},
}


def _cases(supported: bool) -> list[tuple[str, str, str]]:
    cases = []
    for method, cells in support_matrix():
        for i, reason in enumerate(cells):
            family = list(FAMILIES)[i // len(TASK_TYPES)]
            task = TASK_TYPES[i % len(TASK_TYPES)]
            if (reason is None) == supported:
                cases.append((method, family, task))
    return cases


SUPPORTED = _cases(True)
UNSUPPORTED = _cases(False)


def make_recipe(family, task, method, tmp_path, tiny_model_dir, sentiment_files) -> Path:
    spec = {"name": method, **METHOD_OPTIONS.get(method, {})}
    if task == "classification":
        train, dev = sentiment_files
        data = classification_recipe(tiny_model_dir(family), train, dev, tmp_path / "run", spec)
        data["train"].update(epochs=1, max_steps=4, logging_steps=1)
    elif task == "regression":  # text pairs: the pair encoding of every family as well
        train, dev = score_files(tmp_path, pair=True)
        model = tiny_model_dir(family)
        data = regression_recipe(model, train, dev, tmp_path / "run", spec, pair=True)
        data["train"].update(epochs=1, max_steps=4, logging_steps=1)
    else:
        data = generation_recipe(tiny_model_dir(family), task, tmp_path, spec)
        data["train"].update(max_steps=4, logging_steps=1)
        data["eval"]["generation"] = {"max_new_tokens": 4, "num_beams": 1}
        data["data"]["max_eval_samples"] = 6
    return write_recipe(tmp_path / "r.yaml", data)


@pytest.fixture()
def spy(monkeypatch):
    """Wraps every method's `apply` to keep the base parameters before and after training."""
    record: dict = {}

    def wrap(method):
        original = method.apply

        def apply(model, ctx):
            record["params"] = dict(model.named_parameters(remove_duplicate=False))
            record["before"] = {n: p.detach().clone() for n, p in record["params"].items()}
            record["ctx"] = ctx
            wrapped = original(model, ctx)
            record["model"] = wrapped
            record["trainable"] = {
                n: p.detach().clone() for n, p in wrapped.named_parameters() if p.requires_grad
            }
            return wrapped

        monkeypatch.setattr(method, "apply", apply)

    for method in METHODS.values():
        wrap(method)
    return record


def may_change(method: str, name: str, new_modules: list[str]) -> bool:
    if method == "full":
        return True
    if method == "bitfit" and name.endswith("bias"):
        return True
    return inside(name, new_modules)


def check_parameters(method: str, record: dict) -> None:
    """Only intended base parameters changed; the method's own parameters did train."""
    import torch

    new_modules = record["ctx"].new_modules
    changed = [n for n, p in record["params"].items() if not torch.equal(p, record["before"][n])]
    leaked = [n for n in changed if not may_change(method, n, new_modules)]
    assert not leaked, f"{method} changed frozen base parameters: {leaked[:5]}"
    current = dict(record["model"].named_parameters())
    own = [
        n
        for n, before in record["trainable"].items()
        if not inside(n, new_modules) and "modules_to_save" not in n
    ]
    assert own, f"{method} has no trainable parameter of its own"
    trained = [n for n in own if not torch.equal(current[n], record["trainable"][n])]
    assert trained, f"{method}: none of its own parameters changed in training"


def check_untrained(record: dict, out: Path, metrics: dict) -> None:
    """A method that trains nothing: no parameter trainable or changed, no weights saved."""
    import torch

    assert record["trainable"] == {}
    assert all(torch.equal(p, record["before"][n]) for n, p in record["params"].items())
    assert "train_loss" not in metrics and math.isfinite(metrics["loss"])
    assert metrics["artifact_bytes"] == 0
    assert [p.name for p in out.iterdir() if p.is_dir()] == ["tokenizer"]


def _predictions(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def check_reload(runner, out: Path, task: str) -> None:
    """`finetune eval` (fresh base model + Method.load) gives the training-time predictions."""
    result = runner.invoke(app, ["eval", str(out)])
    assert result.exit_code == 0, result.output
    before = json.loads((out / "metrics.json").read_text())
    after = json.loads((out / "eval_eval.json").read_text())
    assert after["loss"] == pytest.approx(before["loss"], abs=1e-5)
    saved, again = (
        _predictions(out / "predictions.jsonl"),
        _predictions(out / "predictions_eval.jsonl"),
    )
    if task == "classification":
        assert [r["label"] for r in again] == [r["label"] for r in saved]
        for got, want in zip(again, saved):
            assert got["probability"] == pytest.approx(want["probability"], abs=1e-5)
    elif task == "regression":  # numbers, not labels
        assert all(isinstance(r["score"], float) for r in again)
        for got, want in zip(again, saved):
            assert got["score"] == pytest.approx(want["score"], abs=1e-5)
            assert got["reference"] == want["reference"]
    else:
        assert [r["prediction"] for r in again] == [r["prediction"] for r in saved]


@pytest.mark.parametrize(("method", "family", "task"), SUPPORTED)
def test_supported_combination_trains_saves_reloads(
    method, family, task, tmp_path, runner, tiny_model_dir, sentiment_files, spy
):
    recipe = make_recipe(family, task, method, tmp_path, tiny_model_dir, sentiment_files)
    result = runner.invoke(app, ["run", str(recipe), "--no-progress"])
    assert result.exit_code == 0, result.output
    out = tmp_path / "run"
    metrics = json.loads((out / "metrics.json").read_text())
    if not METHODS[method].trains:  # the zero-shot baseline: evaluated as it is
        check_untrained(spy, out, metrics)
        check_reload(runner, out, task)
        return
    assert math.isfinite(metrics["train_loss"]) and math.isfinite(metrics["loss"])
    assert metrics["steps"] == 4
    check_parameters(method, spy)
    artifact = out / METHODS[method].artifact_dir
    if method != "full":
        assert (artifact / "adapter_model.safetensors").exists()
        assert (artifact / "adapter_config.json").exists()
    if method in ("houlsby", "pfeiffer", "bitfit"):  # our format: exactly what trained
        from safetensors import safe_open

        with safe_open(str(artifact / "adapter_model.safetensors"), framework="pt") as handle:
            assert set(handle.keys()) == set(spy["trainable"])
    check_reload(runner, out, task)
    if METHODS[method].mergeable:
        check_merge(runner, out, tmp_path / "merged")


def check_merge(runner, out: Path, merged: Path) -> None:
    """`finetune merge` folds the method in and its parity check (merged logits == adapter
    logits on the eval inputs) passes; the result is a plain transformers model."""
    result = runner.invoke(app, ["merge", str(out), "--out", str(merged)])
    assert result.exit_code == 0, result.output
    assert (merged / "config.json").exists() and not (merged / "adapter_config.json").exists()


@pytest.mark.parametrize(("method", "family", "task"), UNSUPPORTED)
def test_unsupported_combination_rejected_by_validate(
    method, family, task, tmp_path, runner, tiny_model_dir, sentiment_files
):
    recipe = make_recipe(family, task, method, tmp_path, tiny_model_dir, sentiment_files)
    result = runner.invoke(app, ["validate", str(recipe)])
    assert result.exit_code == 2, result.output
    assert "method.name" in result.output
    from finetune.tasks import model_kind

    reason = METHODS[method].unsupported_reason(
        FAMILIES[family], model_kind(task, FAMILIES[family])
    )
    assert reason and reason.split()[0] in result.output
