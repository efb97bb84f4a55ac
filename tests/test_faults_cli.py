"""Issue #13 through the CLI: `--resume` refusing a changed recipe or data before any weight
loads, SIGTERM on a real `finetune run` process (exit 3, the printed command resumes it), and
kill -9 at random moments, checkpoint writes included, ending with the uninterrupted metrics.

The tiny BERT here has dropout 0.1, so "the same metrics" means the random state, not only
the weights, was restored.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from finetune.cli import app
from tests.conftest import REPO, classification_recipe, write_recipe

RESULT_KEYS = ("accuracy", "loss", "train_loss", "train_samples", "steps")


def _recipe(tmp_path: Path, model: Path, files: tuple[Path, Path], name: str, **train: Any) -> Path:
    train_file, dev = files
    data = classification_recipe(
        model, train_file, dev, tmp_path / name, {"name": "lora", "dropout": 0.1}, **train
    )
    return write_recipe(tmp_path / f"{name}.yaml", data)


def _metrics(run: Path) -> dict[str, Any]:
    return json.loads((run / "metrics.json").read_text())


def _step_losses(run: Path) -> list[tuple[int, float]]:
    lines = (run / "log.jsonl").read_text().splitlines()
    return [(r["step"], r["loss"]) for r in map(json.loads, lines) if "loss" in r]


def _weights(run: Path) -> dict[str, Any]:
    from safetensors.torch import load_file

    return load_file(run / "adapter" / "adapter_model.safetensors")


def _assert_same_run(a: Path, b: Path) -> None:
    import torch

    ma, mb = _metrics(a), _metrics(b)
    for key in RESULT_KEYS:
        assert ma[key] == pytest.approx(mb[key], abs=1e-6), key
    assert _step_losses(a) == _step_losses(b)
    wa, wb = _weights(a), _weights(b)
    assert wa.keys() == wb.keys()
    for key in wa:
        assert torch.allclose(wa[key], wb[key], atol=1e-6, rtol=0), key


def test_resume_refuses_a_changed_recipe_or_data_before_loading_weights(
    tmp_path, runner, tiny_model_dir, sentiment_files, monkeypatch
):
    import finetune.setup.run_setup as pipeline
    import finetune.train.loop as loop_module

    recipe = _recipe(tmp_path, tiny_model_dir("bert"), sentiment_files, "run", save_steps=4)
    original = loop_module.save_checkpoint

    def crash_after_save(*args: Any, **kwargs: Any) -> Any:
        original(*args, **kwargs)
        raise KeyboardInterrupt

    monkeypatch.setattr(loop_module, "save_checkpoint", crash_after_save)
    assert runner.invoke(app, ["run", str(recipe), "--no-progress"]).exit_code != 0
    monkeypatch.setattr(loop_module, "save_checkpoint", original)

    def no_weights(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("weights loaded before the refusal")

    monkeypatch.setattr(pipeline, "load_base_and_method", no_weights)
    result = runner.invoke(app, ["run", str(recipe), "train.lr=0.001", "--resume"])
    assert result.exit_code == 2, result.output
    assert "train.lr: 0.005 -> 0.001" in result.output and "E403" in result.output
    train_file = sentiment_files[0]
    original_bytes = train_file.read_bytes()
    train_file.write_bytes(original_bytes + b"a fine film,pos\r\n")
    result = runner.invoke(app, ["run", str(recipe), "--resume"])
    assert result.exit_code == 2 and "train data changed" in result.output, result.output
    train_file.write_bytes(original_bytes)
    monkeypatch.undo()
    # what may change on resume does not stop it
    result = runner.invoke(app, ["run", str(recipe), "train.logging_steps=1", "--resume"])
    assert result.exit_code == 0, result.output


# --------------------------------------------------------------------------- real processes


def _start(recipe: Path, *flags: str, stall: float = 0.0) -> subprocess.Popen:
    """`finetune run` in its own process group; one thread, so that every run (whichever
    process it is in) sums floats in the same order. Output goes to a file (no pipe to fill)."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    if stall:
        env["FINETUNE_TEST_STALL_CHECKPOINT"] = str(stall)
    output = recipe.parent / f"{recipe.stem}-{time.monotonic_ns()}.out"
    with output.open("w") as handle:
        proc = subprocess.Popen(
            [sys.executable, "-m", "finetune", "run", str(recipe), *flags],
            cwd=recipe.parent,
            env=env,
            text=True,
            stdout=handle,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    proc.output = output  # type: ignore[attr-defined]
    return proc


def _finish(proc: subprocess.Popen, timeout: float = 300) -> tuple[int, str]:
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGTERM)  # torchrun passes it on to its workers
        try:
            proc.wait(timeout=60)
        finally:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        raise AssertionError(f"still running after {timeout} s") from None
    return proc.returncode, proc.output.read_text()  # type: ignore[attr-defined]


def _cli(recipe: Path, *flags: str) -> None:
    code, out = _finish(_start(recipe, "--no-progress", *flags))
    assert code == 0, out


def _wait_for(condition: Any, proc: subprocess.Popen, timeout: float = 240) -> bool:
    """Poll until condition() holds; False if the process ended first."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        if proc.poll() is not None:
            return False
        time.sleep(0.02)
    raise AssertionError("timed out waiting")


def _steps_logged(run: Path) -> int:
    try:
        return sum('"loss"' in line for line in (run / "log.jsonl").read_text().splitlines())
    except FileNotFoundError:
        return 0


def _progressed(run: Path, before: int, since: float) -> bool:
    """This process logged a step beyond `before` (not an old log awaiting --overwrite)."""
    log = run / "log.jsonl"
    return log.exists() and log.stat().st_mtime >= since and _steps_logged(run) > before


def _writing_checkpoint(run: Path) -> bool:
    """A checkpoint is written in full but not yet renamed (the stall of the test hook)."""
    folder = run / "checkpoints"
    return folder.is_dir() and any(
        p.name.startswith(".") and (p / "trainer_state.json").exists() for p in folder.iterdir()
    )


@pytest.mark.slow
def test_sigterm_checkpoints_and_the_printed_command_resumes(
    tmp_path, tiny_model_dir, sentiment_files
):
    """SIGTERM to `finetune run`: exit 3, exactly one checkpoint (keep_checkpoints 1) at the
    step after the signal, one line with the resume command (recipe and overrides as given);
    running that command ends where an uninterrupted run ends."""
    model = tiny_model_dir("bert")
    straight = _recipe(tmp_path, model, sentiment_files, "straight", epochs=4, logging_steps=1)
    _cli(straight)
    recipe = _recipe(tmp_path, model, sentiment_files, "run", epochs=4)
    proc = _start(recipe, "train.logging_steps=1", "train.save_steps=3", "--no-progress", stall=0.2)
    run = tmp_path / "run"
    assert _wait_for(lambda: _steps_logged(run) >= 4, proc)
    proc.send_signal(signal.SIGTERM)
    code, out = _finish(proc)
    assert code == 3, out
    lines = [line for line in out.splitlines() if "resume with:" in line]
    assert len(lines) == 1 and "SIGTERM: stopped after step" in lines[0], out
    command = lines[0].split("resume with: ", 1)[1].strip()
    expected = f"finetune run {recipe} train.logging_steps=1 train.save_steps=3 --resume"
    assert command == expected + " --no-progress"
    stopped_at = int(lines[0].split("stopped after step ")[1].split()[0])
    names = [p.name for p in (run / "checkpoints").iterdir()]
    assert names == [f"step-{stopped_at:08d}"]
    assert _steps_logged(run) == stopped_at
    state = json.loads((run / "checkpoints" / names[0] / "trainer_state.json").read_text())
    argv = shlex.split(command)
    assert argv[:3] == ["finetune", "run", str(recipe)]
    _cli(recipe, *argv[3:])
    _assert_same_run(run, tmp_path / "straight")
    # the clock and the sample count cover the whole run, both parts
    metrics = _metrics(run)
    assert metrics["train_seconds"] >= state["train_seconds"] > 0
    assert metrics["train_samples"] == 4 * 96
    rate = metrics["train_samples"] / metrics["train_seconds"]
    rounding = 0.005 / metrics["train_seconds"]  # train_seconds is written to 2 decimals
    assert metrics["train_samples_per_s"] == pytest.approx(rate, rel=0.01 + rounding)


@pytest.mark.slow
def test_a_second_signal_quits_at_once_keeping_the_last_complete_checkpoint(
    tmp_path, tiny_model_dir, sentiment_files
):
    """The first SIGTERM arrives while step 2's checkpoint is written; that write completes,
    step 3 is trained and its stop checkpoint starts; a second SIGTERM during that write quits
    at once (exit 143): the stop checkpoint is never renamed into place (its temporary
    directory is removed), step 2's is the one `--resume` continues from."""
    recipe = _recipe(tmp_path, tiny_model_dir("bert"), sentiment_files, "run", save_steps=2)
    run = tmp_path / "run"
    proc = _start(recipe, "--no-progress", stall=1.5)
    assert _wait_for(lambda: _writing_checkpoint(run), proc)
    proc.send_signal(signal.SIGTERM)
    hidden = run / "checkpoints"
    assert _wait_for(lambda: any(hidden.glob(".step-00000003.tmp-*/trainer_state.json")), proc)
    proc.send_signal(signal.SIGTERM)
    code, out = _finish(proc)
    assert code == 143, out
    assert [p.name for p in hidden.iterdir()] == ["step-00000002"]
    code, out = _finish(_start(recipe, "--no-progress", "--resume"))
    assert code == 0 and (run / ".finished").exists(), out


@pytest.mark.slow
def test_kill_9_at_random_moments_ends_with_the_uninterrupted_metrics(
    tmp_path, tiny_model_dir, sentiment_files
):
    """Eight kill -9s: odd ones at a random moment while training, even ones while a
    checkpoint is fully written but not yet renamed (the stall test hook). After each, the run
    is resumed (or restarted with --overwrite when no complete checkpoint exists yet); it ends
    with the uninterrupted run's metrics, per-step losses and weights."""
    model = tiny_model_dir("bert")
    opts = {"epochs": 4, "logging_steps": 1, "save_steps": 2, "eval_steps": 5}
    straight = _recipe(tmp_path, model, sentiment_files, "straight", **opts)
    _cli(straight)
    recipe = _recipe(tmp_path, model, sentiment_files, "run", **opts)
    run, rng = tmp_path / "run", random.Random(13)
    kills = during_write = 0
    while kills < 8:
        has_checkpoint = any((run / "checkpoints").glob("step-*/trainer_state.json"))
        flag = "--resume" if has_checkpoint else "--overwrite"
        proc = _start(recipe, "--no-progress", flag, stall=0.15)
        before, since = (_steps_logged(run) if has_checkpoint else 0), time.time()
        if kills % 2:
            started = _wait_for(lambda b=before, t=since: _progressed(run, b, t), proc)
            time.sleep(rng.uniform(0.0, 0.6))
        else:
            started = _wait_for(lambda: _writing_checkpoint(run), proc)
            during_write += started
        if not started or proc.poll() is not None:
            break  # finished before this kill: the run is done
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        kills += 1
    assert kills >= 6 and during_write >= 3, (kills, during_write)
    if not (run / ".finished").exists():
        _cli(recipe, "--resume")
    _assert_same_run(run, tmp_path / "straight")


# --------------------------------------------------------------------------- several processes


def _torchrun(recipe: Path, port: int, *flags: str, stall: float = 0.0) -> subprocess.Popen:
    import shutil

    exe = shutil.which("torchrun")
    launcher = [exe] if exe else [sys.executable, "-m", "torch.distributed.run"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    if stall:
        env["FINETUNE_TEST_STALL_CHECKPOINT"] = str(stall)
    output = recipe.parent / f"{recipe.stem}-{time.monotonic_ns()}.out"
    cmd = [*launcher, "--nproc_per_node", "2", "--master_port", str(port)]
    cmd += ["-m", "finetune", "run", str(recipe), "--no-progress", *flags]
    with output.open("w") as handle:
        proc = subprocess.Popen(
            cmd,
            cwd=recipe.parent,
            env=env,
            text=True,
            stdout=handle,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    proc.output = output  # type: ignore[attr-defined]
    return proc


def _parent(pid: int) -> int:
    stat = Path(f"/proc/{pid}/stat").read_text()
    return int(stat.rsplit(")", 1)[1].split()[1])


def _worker_pid(launcher: int, rank: int) -> int | None:
    """The pid of the launcher's descendant with RANK=rank, read from /proc (torchrun starts
    its workers in sessions of their own, so the process group does not find them)."""
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        pid = int(entry.name)
        try:
            environ = (entry / "environ").read_bytes().split(b"\0")
            ancestor = pid
            while ancestor > 1 and ancestor != launcher:
                ancestor = _parent(ancestor)
        except (OSError, ValueError, IndexError):
            continue
        if ancestor == launcher and f"RANK={rank}".encode() in environ:
            return pid
    return None


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc").is_dir(), reason="finds the worker through /proc")
def test_sigterm_to_one_rank_stops_every_rank_at_the_same_step(
    tmp_path, tiny_model_dir, sentiment_files
):
    """torchrun, 2 processes, SIGTERM to rank 1 only: both ranks stop after the same step with
    one checkpoint holding both ranks' random state; `--resume` on 2 processes ends with the
    uninterrupted 2-process run's per-step losses and weights."""
    model = tiny_model_dir("bert")
    opts = {"epochs": 4, "logging_steps": 1, "batch_size": 8, "save_steps": 2}
    straight = _recipe(tmp_path, model, sentiment_files, "straight", **opts)
    code, out = _finish(_torchrun(straight, 29631), timeout=600)
    assert code == 0, out
    recipe = _recipe(tmp_path, model, sentiment_files, "run", **opts)
    run = tmp_path / "run"
    proc = _torchrun(recipe, 29632, stall=0.3)
    assert _wait_for(lambda: _steps_logged(run) >= 3, proc)
    worker = _worker_pid(proc.pid, 1)
    assert worker is not None
    os.kill(worker, signal.SIGTERM)
    code, out = _finish(proc, timeout=600)
    assert code != 0
    lines = [line for line in out.splitlines() if "resume with:" in line]
    assert len(lines) == 2, out  # each rank says it stopped, at the same step
    steps = {line.split("stopped after step ")[1].split()[0] for line in lines}
    assert len(steps) == 1, lines
    step = int(steps.pop())
    assert "accelerate launch --num_processes 2 -m finetune run" in lines[0]
    checkpoint = run / "checkpoints" / f"step-{step:08d}"
    assert [p.name for p in (run / "checkpoints").iterdir()] == [checkpoint.name]
    assert {p.name for p in checkpoint.glob("random_states_*.pkl")} == {
        "random_states_0.pkl",
        "random_states_1.pkl",
    }
    code, out = _finish(_torchrun(recipe, 29633, "--resume"), timeout=600)
    assert code == 0, out
    _assert_same_run(run, tmp_path / "straight")
