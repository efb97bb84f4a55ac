"""FSDP2 for real on a CPU: two gloo processes through `accelerate launch` with the shipped
`recipes/accelerate/fsdp.yaml` (issue #16).

accelerate 1.15 uses FSDP only on GPU backends, so `tests/fsdp_on_cpu` (a sitecustomize shim)
switches the launch's AcceleratorState to FSDP as accelerate does on a GPU; everything after
that is the product's and torch's own code: `fully_shard` per block, training on shards, the
gathered save. Each cell trains, saves, and its run directory reloads with `finetune eval` in a
plain process to the metrics the run reported (a save of shards would not load: every weight
has the whole shape of the model's). This found two bugs that a GPU run hit too: BERT's
`_no_split_modules` holds `BertEmbeddings`, which accelerate then sharded twice, and FSDP2's
sharded state dict, which `save_pretrained` cannot write.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from safetensors.torch import load_file

from tests.conftest import REPO, classification_recipe, write_csv, write_recipe
from tests.test_multinode import _free_port, _start, _wait
from tests.tiny_models import sentiment_rows

pytestmark = pytest.mark.slow

SHIM = REPO / "tests" / "fsdp_on_cpu"
CELLS = [("bert", "lora"), ("bert", "houlsby"), ("bert", "full"), ("gpt2", "lora"), ("t5", "lora"),
         ("t5", "full")]  # fmt: skip


def _launch(recipe: Path, cwd: Path) -> tuple[int, str]:
    accelerate = shutil.which("accelerate")
    if accelerate is None:
        pytest.skip("the accelerate command is not on PATH")
    cmd = [accelerate, "launch", "--config_file", str(REPO / "recipes/accelerate/fsdp.yaml"),
           "--num_processes", "2", "--main_process_port", str(_free_port()),
           "-m", "finetune", "run", str(recipe), "--no-progress"]  # fmt: skip
    env = {"PYTHONPATH": f"{SHIM}{os.pathsep}{REPO}", "FINETUNE_TEST_CPU_FSDP": "1"}
    return _wait(_start(cmd, cwd, env))


@pytest.mark.parametrize(("family", "method"), CELLS, ids=[f"{f}-{m}" for f, m in CELLS])
def test_fsdp2_on_two_cpu_processes_saves_whole_weights_that_reload(
    tmp_path, tiny_model_dir, family, method
):
    out, metrics = _train(tmp_path, tiny_model_dir(family), method, with_eval=True)
    saved = out / ("model" if method == "full" else "adapter")
    tensors = {k: v for f in saved.glob("*.safetensors") for k, v in load_file(f).items()}
    assert tensors, f"no weights in {saved}"
    if method != "full":  # only what trained: an adapter never carries the frozen base
        assert not any("word_embeddings" in k or ".wte." in k for k in tensors), list(tensors)
    again = _reload(tmp_path, out)
    assert again["accuracy"] == metrics["accuracy"]
    assert again["loss"] == pytest.approx(metrics["loss"], abs=1e-4)


def test_fsdp2_prompt_tuning_saves_right_after_training(tmp_path, tiny_model_dir):
    """Prompt tuning's save runs the prompt encoder, whose weights FSDP2 keeps sharded after a
    backward pass: with no eval split (no final forward to leave them whole) the save must
    still find them whole."""
    out, _ = _train(tmp_path, tiny_model_dir("bert"), "prompt", with_eval=False)
    again = _reload(tmp_path, out, data=tmp_path / "data" / "dev.csv")
    assert 0.0 <= again["accuracy"] <= 1.0


def _train(tmp_path: Path, model: Path, method: str, with_eval: bool) -> tuple[Path, dict]:
    train = write_csv(tmp_path / "data" / "train.csv", sentiment_rows(40, seed=1))
    dev = write_csv(tmp_path / "data" / "dev.csv", sentiment_rows(16, seed=2))
    out = tmp_path / "run"
    data = classification_recipe(model, train, dev, out, {"name": method}, epochs=1,
                                 batch_size=4)  # fmt: skip
    if not with_eval:
        del data["data"]["eval"]
    code, log = _launch(write_recipe(tmp_path / "fsdp.yaml", data), tmp_path)
    assert code == 0, log[-3000:]
    assert "FSDP shards each of:" in log
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["distributed_type"] == "FSDP" and metrics["num_processes"] == 2
    return out, metrics


def _reload(tmp_path: Path, out: Path, data: Path | None = None) -> dict:
    """`finetune eval` of the run directory in a plain process (no FSDP, no shim)."""
    cmd = [sys.executable, "-m", "finetune", "eval", str(out)]
    cmd += ["--data", str(data)] if data else []
    done = subprocess.run(cmd, capture_output=True, text=True, cwd=tmp_path, timeout=300,
                          env={**os.environ, "PYTHONPATH": str(REPO)})  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    found = sorted(out.glob("eval_*.json"), key=lambda p: p.stat().st_mtime)
    return json.loads(found[-1].read_text())
