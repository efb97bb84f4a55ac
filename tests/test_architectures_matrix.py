"""Every model_type of the architecture table x every task its shape supports x {lora, houlsby,
full}, end to end through the CLI on a tiny random checkpoint (tests/tiny_archs.py).

Each case trains a few steps with `finetune run`, then `finetune eval` on the saved run (a fresh
base model + the saved method) must reproduce the end-of-training loss and predictions, and
`finetune merge` must pass its output-parity check for the mergeable methods. Architectures and
tasks come from the registries, so a new table entry is covered by adding its tiny fixture.

Translation runs the summarization code path with another prompt, so it runs with every method
only where it differs per architecture (T5's prefixes, mBART's language codes, Marian) and with
LoRA elsewhere; regression is classification's head with one output and MSE, run with LoRA and
full on text pairs: ~260 cases, about 8 minutes on two cores.
"""

from __future__ import annotations

import json
import math

import pytest

from finetune.cli import app
from finetune.models import ARCHITECTURES
from finetune.recipe.schema import TASK_TYPES
from finetune.tasks import model_kind
from tests.conftest import classification_recipe, write_recipe
from tests.regression_data import regression_recipe, score_files
from tests.test_generation import generation_recipe
from tests.test_methods_matrix import check_reload

METHODS = {"lora": {"r": 4}, "houlsby": {"reduction_factor": 8}, "full": {}}
MERGEABLE = ("lora", "full")


def _methods(model_type: str, task: str) -> list[str]:
    arch = ARCHITECTURES[model_type]
    special = arch.task_prefix or arch.language_codes or model_type == "marian"
    if task == "regression":  # classification's head with one output: lora and full suffice
        return ["lora", "full"]
    return ["lora"] if task == "translation" and not special else list(METHODS)


def _cases() -> list[tuple[str, str, str]]:
    cases = []
    for model_type, arch in ARCHITECTURES.items():
        for task in TASK_TYPES:
            if arch.kind_reason(model_kind(task, arch)) is None:
                cases += [(model_type, task, method) for method in _methods(model_type, task)]
    return cases


CASES = _cases()


def make_recipe(model_dir, task, method, tmp_path, sentiment_files):
    spec = {"name": method, **METHODS[method]}
    if task == "classification":
        train, dev = sentiment_files
        data = classification_recipe(model_dir, train, dev, tmp_path / "run", spec)
        data["data"].update(max_train_samples=24, max_eval_samples=8)
        data["train"].update(epochs=1, max_steps=2, batch_size=8, logging_steps=1)
    elif task == "regression":
        train, dev = score_files(tmp_path, pair=True)
        data = regression_recipe(model_dir, train, dev, tmp_path / "run", spec, pair=True)
        data["data"].update(max_train_samples=24, max_eval_samples=8)
        data["train"].update(epochs=1, max_steps=2, batch_size=8, logging_steps=1)
    else:
        data = generation_recipe(model_dir, task, tmp_path, spec)
        data["data"].update(max_train_samples=16, max_eval_samples=4)
        data["train"].update(max_steps=2, logging_steps=1)
        data["eval"]["generation"] = {"max_new_tokens": 4, "num_beams": 1}
    return write_recipe(tmp_path / "r.yaml", data)


@pytest.mark.slow
@pytest.mark.parametrize(("model_type", "task", "method"), CASES)
def test_architecture_trains_saves_reloads_merges(
    model_type, task, method, tmp_path, runner, tiny_model_dir, sentiment_files
):
    recipe = make_recipe(tiny_model_dir(model_type), task, method, tmp_path, sentiment_files)
    result = runner.invoke(app, ["run", str(recipe), "--no-progress"])
    assert result.exit_code == 0, result.output
    out = tmp_path / "run"
    metrics = json.loads((out / "metrics.json").read_text())
    assert math.isfinite(metrics["train_loss"]) and math.isfinite(metrics["loss"])
    assert metrics["steps"] == 2
    assert json.loads((out / "run.json").read_text())["architecture"] == model_type
    check_reload(runner, out, task)
    if method in MERGEABLE:
        merged = runner.invoke(app, ["merge", str(out), "--out", str(tmp_path / "merged")])
        assert merged.exit_code == 0, merged.output
        assert (tmp_path / "merged" / "config.json").exists()
