"""Several nodes and FSDP configs on one CPU host (issue #16), with gloo.

Two torchrun "nodes" (`--nnodes 2 --nproc_per_node 1`, c10d rendezvous on localhost, started as
two commands as on two machines) must train exactly like one process with grad_accum=2: the
same metrics, the same per-step losses and, to float noise, the same weights, with 46 training
rows in batches of 4 (11 full batches, odd and prime, and a short one of 2 rows).

`accelerate launch --config_file recipes/accelerate/fsdp.yaml` on a CPU: accelerate 1.15 turns
FSDP on only for GPU backends, so the run trains as DDP over gloo; the test pins that (and that
the user is told), that logs and the summary come from the main process only, and that the
saved adapter reloads with `finetune eval` to the metrics the run reported.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO, classification_recipe, write_csv, write_recipe
from tests.tiny_models import sentiment_rows

pytestmark = pytest.mark.slow


def _env(extra: dict[str, str] | None = None) -> dict[str, str]:
    return {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO), **(extra or {})}


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("localhost", 0))
        return int(sock.getsockname()[1])


def _torchrun() -> list[str]:
    exe = shutil.which("torchrun")
    return [exe] if exe else [sys.executable, "-m", "torch.distributed.run"]


def _start(cmd: list[str], cwd: Path, env: dict[str, str] | None = None) -> subprocess.Popen:
    return subprocess.Popen(
        cmd,
        cwd=cwd,
        env=_env(env),
        text=True,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )


def _wait(proc: subprocess.Popen, timeout: int = 400) -> tuple[int, str]:
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
        raise AssertionError(f"still running after {timeout} s") from None
    return proc.returncode, out + err


def _recipe(tmp_path: Path, model: Path, name: str, grad_accum: int) -> Path:
    train = write_csv(tmp_path / "data" / "train.csv", sentiment_rows(46, seed=1))
    dev = write_csv(tmp_path / "data" / "dev.csv", sentiment_rows(23, seed=2))
    data = classification_recipe(
        model,
        train,
        dev,
        tmp_path / name,
        {"name": "lora", "dropout": 0.0},
        epochs=2,
        batch_size=4,
        grad_accum=grad_accum,
        logging_steps=1,
    )
    return write_recipe(tmp_path / f"{name}.yaml", data)


def _curve(run: Path) -> list[float]:
    rows = [json.loads(x) for x in (run / "log.jsonl").read_text().splitlines()]
    return [r["loss"] for r in rows if "loss" in r]


def test_two_nodes_on_one_host_match_one_process(tmp_path, tiny_model_dir):
    import torch
    from safetensors.torch import load_file

    model = tiny_model_dir("bert-nodropout")
    one = _recipe(tmp_path, model, "one", grad_accum=2)
    two = _recipe(tmp_path, model, "two", grad_accum=1)
    code, log = _wait(
        _start([sys.executable, "-m", "finetune", "run", str(one), "--no-progress"], tmp_path)
    )
    assert code == 0, log[-3000:]

    port = _free_port()
    nodes = []
    for rank in (0, 1):  # as on two machines: the same command, its own node rank
        cmd = [
            *_torchrun(),
            "--nnodes",
            "2",
            "--nproc_per_node",
            "1",
            "--node_rank",
            str(rank),
            "--rdzv-backend",
            "c10d",
            "--rdzv-endpoint",
            f"localhost:{port}",
            "--rdzv-id",
            "finetune-two-nodes",
            "-m",
            "finetune",
            "run",
            str(two),
            "--no-progress",
        ]
        nodes.append(_start(cmd, tmp_path))
    results = [_wait(proc) for proc in nodes]
    for code, log in results:
        assert code == 0, log[-3000:]
    # the summary is printed once, by the main process's node
    assert sum(log.count("done in") for _, log in results) == 1

    m1 = json.loads((tmp_path / "one" / "metrics.json").read_text())
    m2 = json.loads((tmp_path / "two" / "metrics.json").read_text())
    assert m2["num_processes"] == 2 and m1["num_processes"] == 1
    assert m1["effective_batch"] == m2["effective_batch"] == 8
    assert m1["train_samples"] == m2["train_samples"] == 92  # 46 rows x 2 epochs, each once
    assert m1["steps"] == m2["steps"] == 12  # 12 batches -> 6 steps per epoch
    assert m1["samples"] == m2["samples"] == 23
    assert m1["accuracy"] == m2["accuracy"]
    assert m1["loss"] == pytest.approx(m2["loss"], abs=1e-4)
    assert _curve(tmp_path / "one") == pytest.approx(_curve(tmp_path / "two"), rel=1e-4)
    a = load_file(tmp_path / "one" / "adapter" / "adapter_model.safetensors")
    b = load_file(tmp_path / "two" / "adapter" / "adapter_model.safetensors")
    assert a.keys() == b.keys()
    for key in a:
        assert torch.allclose(a[key], b[key], atol=2e-3), (key, (a[key] - b[key]).abs().max())


def test_fsdp_config_on_cpu_trains_as_ddp_and_saves_a_reloadable_adapter(tmp_path, tiny_model_dir):
    recipe = _recipe(tmp_path, tiny_model_dir("bert-nodropout"), "fsdp", grad_accum=1)
    accelerate = shutil.which("accelerate")
    if accelerate is None:
        pytest.skip("the accelerate command is not on PATH")
    cmd = [
        accelerate,
        "launch",
        "--config_file",
        str(REPO / "recipes" / "accelerate" / "fsdp.yaml"),
        "--num_processes",
        "2",
        "--main_process_port",
        str(_free_port()),
        "-m",
        "finetune",
        "run",
        str(recipe),
        "--no-progress",
    ]
    code, log = _wait(_start(cmd, tmp_path))
    assert code == 0, log[-3000:]
    assert log.count("done in") == 1, "the run summary must come from the main process only"
    assert log.count("trainable") == 1, "info logs must come from the main process only"
    assert "accelerate uses FSDP only on GPUs" in log
    metrics = json.loads((tmp_path / "fsdp" / "metrics.json").read_text())
    assert metrics["distributed_type"] == "MULTI_CPU" and metrics["num_processes"] == 2

    done = subprocess.run(
        [sys.executable, "-m", "finetune", "eval", str(tmp_path / "fsdp")],
        capture_output=True,
        text=True,
        env=_env(),
        cwd=tmp_path,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    again = json.loads((tmp_path / "fsdp" / "eval_eval.json").read_text())
    assert again["accuracy"] == metrics["accuracy"]
    assert again["loss"] == pytest.approx(metrics["loss"], abs=1e-5)
