"""benchmarks/gpu_check.py's dry mode (`--device cpu`): the script a GPU session runs as is.

The fast test runs one matrix cell in this process; the slow one runs every check in the dry
mode, as the accelerator session will on real sizes (QLoRA reports its skip reason on a CPU).
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys

import pytest

from tests.conftest import REPO

SCRIPT = REPO / "benchmarks" / "gpu_check.py"


def _load():
    spec = importlib.util.spec_from_file_location("gpu_check", SCRIPT)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules["gpu_check"] = module  # dataclasses look their module up by name
    spec.loader.exec_module(module)
    return module


def test_dry_mode_runs_a_cell_and_reloads_it(tmp_path):
    gpu_check = _load()
    out = tmp_path / "table.md"
    code = gpu_check.main(
        [
            "--device",
            "cpu",
            "--only",
            "matrix",
            "--cells",
            "gpt2-lora-translation",
            "--out",
            str(out),
        ]
    )
    table = out.read_text()
    assert code == 0, table
    assert "| matrix gpt2-lora-translation | ok | train_loss" in table
    assert "eval reload matches" in table
    assert "device: CPU" in table and "date: " in table
    assert table.count("| matrix ") == 1  # --cells picks the cells


def test_the_script_needs_no_hub_datasets_or_rouge():
    """The accelerator image has no datasets, rouge_score or Hub: the script must not import
    them (finetune imports datasets lazily, only for Hub sources)."""
    text = SCRIPT.read_text()
    for module in ("import datasets", "from datasets", "import rouge_score", "summarization"):
        assert module not in text
    assert "translation" in text  # the generation task whose metric (sacrebleu) is carried


@pytest.mark.slow
def test_full_dry_mode(tmp_path):
    # compiled kernels go to this test's own inductor cache: a kernel another process left in
    # the machine-wide /tmp/torchinductor_root (one built without libstdc++ failed to load in
    # a CI run here) cannot fail this check
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    env["TORCHINDUCTOR_CACHE_DIR"] = str(tmp_path / "inductor")
    out = tmp_path / "table.md"
    done = subprocess.run(
        [sys.executable, str(SCRIPT), "--device", "cpu", "--out", str(out)],
        capture_output=True,
        text=True,
        env=env,
        timeout=1200,
    )
    table = out.read_text() if out.exists() else done.stdout
    failed = "\n".join(line for line in table.splitlines() if "| FAIL |" in line)
    assert done.returncode == 0, failed + "\n" + (table + done.stderr)[-3000:]
    assert table.count("| matrix ") == 18 and "| FAIL |" not in table
    assert "QLoRA 4-bit gpt2 | ok | skipped: no CUDA GPU" in table
    assert "FSDP 1 process lora | ok" in table and "FSDP 1 process full | ok" in table
    assert "throughput vs Trainer | ok" in table
    assert "decoder throughput vs Trainer | ok" in table and "ours CUDA graphs" in table
    assert "packing throughput packed/padded | ok" in table


def test_dry_mode_packing_writes_its_rows(tmp_path):
    gpu_check = _load()
    out = tmp_path / "table.md"
    code = gpu_check.main(["--device", "cpu", "--only", "packing", "--out", str(out)])
    table = out.read_text()
    assert code == 0, table
    assert "| packed == padded per-sequence losses: max \\|diff\\| | ok | fp32 " in table
    assert "(caught)" in table
    row = next(line for line in table.splitlines() if "packing throughput" in line)
    assert "| ok |" in row and "packed/padded" in row and "tokens/s" in row


def test_a_failing_side_is_reported_not_raised(monkeypatch, tmp_path):
    """On the GPU one side failing (CUDA graphs, say) must leave the throughput check the other
    sides' numbers and say why in the row, which then reads FAIL."""
    gpu_check = _load()

    def fails(setup, spec, steps, side):
        if side == "ours CUDA graphs":
            raise RuntimeError("no graph today")
        return {"ours": 100.0, "ours compiled": 101.0}[side]

    monkeypatch.setattr(gpu_check, "ours_samples_per_s", fails)
    monkeypatch.setattr(gpu_check, "trainer_samples_per_s", lambda setup, spec, steps: 40.0)
    monkeypatch.setattr(gpu_check, "tokens_per_row", lambda setup, spec, steps: 16.0)
    monkeypatch.setattr(gpu_check, "peak_flops", lambda setup: 1e15)
    setup = gpu_check.Setup(gpu=True, work=tmp_path, steps=1, batch=1)
    gpu_check.compare_speed(setup, gpu_check.BERT_SPEED)
    (check,) = setup.checks
    assert "failed: ours CUDA graphs: RuntimeError: no graph today" in check.detail
    assert check.numbers["ratio"] == pytest.approx(101 / 40)  # the best round of the others
    assert "MFU" in check.detail and not check.ok
