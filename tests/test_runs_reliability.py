"""Run directories: never overwritten by accident, never written by two runs, never half-written.

Refusals go through `finetune run` (they happen before any weight loads); the lock is held by a
real second process; disk-full failures are injected where checkpoints are written.
"""

from __future__ import annotations

import errno
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest

from finetune.cli import app
from finetune.errors import CheckpointError, RunDirError, RunFinishedError, RunLockedError
from finetune.run.files import (
    RunLock,
    append_jsonl,
    atomic_dir,
    atomic_write_text,
    check_can_start,
    claim_run_dir,
)
from finetune.run.layout import FINISHED, LOCK
from finetune.train.checkpoints import TrainState, save_checkpoint
from tests.conftest import classification_recipe, write_recipe

ENOSPC = OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


def fake_model(root: Path) -> Path:
    """`run` refuses a run directory before loading weights: config.json is enough."""
    (root / "model").mkdir(parents=True, exist_ok=True)
    (root / "model" / "config.json").write_text(json.dumps({"model_type": "bert"}))
    return root / "model"


def recipe_file(tmp_path: Path, sentiment_files: tuple[Path, Path], out: Path) -> Path:
    train, dev = sentiment_files
    data = classification_recipe(fake_model(tmp_path), train, dev, out, {"name": "lora"})
    return write_recipe(tmp_path / "r.yaml", data)


def finished_run(out: Path) -> dict[str, bytes]:
    out.mkdir(parents=True)
    (out / "metrics.json").write_text('{"accuracy": 0.9}\n')
    (out / "recipe.yaml").write_text("model: {name: x}\n")
    (out / FINISHED).write_text("2026-01-01\n")
    return snapshot(out)


def snapshot(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in root.rglob("*") if p.is_file()}


# --------------------------------------------------------------------------- overwrite


def test_finished_run_is_not_overwritten_without_flag(tmp_path, runner, sentiment_files):
    out = tmp_path / "run"
    before = finished_run(out)
    result = runner.invoke(app, ["run", str(recipe_file(tmp_path, sentiment_files, out))])
    assert result.exit_code == 2, result.output
    assert "holds a finished run; refusing to overwrite it" in result.output
    assert "--overwrite" in result.output and "Traceback" not in result.output
    assert snapshot(out) == before and not (out / LOCK).exists()
    # --resume on it: nothing to resume is the problem, not an overwrite
    resumed = runner.invoke(
        app, ["run", str(recipe_file(tmp_path, sentiment_files, out)), "--resume"]
    )
    assert resumed.exit_code == 2 and "finished run; there is nothing to resume" in resumed.output
    assert snapshot(out) == before


def test_unfinished_run_with_checkpoints_needs_resume_or_overwrite(tmp_path):
    out = tmp_path / "run"
    (out / "checkpoints" / "step-00000004").mkdir(parents=True)
    with pytest.raises(RunFinishedError) as excinfo:
        check_can_start(out, overwrite=False, resume=False)
    assert "--resume" in excinfo.value.render() and "--overwrite" in excinfo.value.render()
    check_can_start(out, overwrite=False, resume=True)
    check_can_start(out, overwrite=True, resume=False)


def test_foreign_directory_is_never_cleared(tmp_path):
    out = tmp_path / "photos"
    out.mkdir()
    (out / "holiday.jpg").write_bytes(b"\xff\xd8")
    for overwrite in (False, True):
        with pytest.raises(RunDirError) as excinfo:
            check_can_start(out, overwrite=overwrite, resume=False)
        assert "not a" in excinfo.value.message and "run directory" in excinfo.value.message
    assert (out / "holiday.jpg").exists()


def test_output_path_that_is_a_file(tmp_path):
    (tmp_path / "out").write_text("x")
    with pytest.raises(RunDirError, match="exists and is not a directory"):
        check_can_start(tmp_path / "out", overwrite=True, resume=False)


def test_stale_lock_file_alone_counts_as_empty(tmp_path):
    """A crashed run leaves `.lock` behind (unlocked): the directory is still usable.

    The claim must really hold the lock (it names this process and refuses a second claim),
    and releasing it removes the stale file (issue #9 finding 24: this test asserted nothing).
    """
    out = tmp_path / "run"
    out.mkdir()
    (out / LOCK).write_text("pid 1 on gone\n")
    lock = claim_run_dir(out, overwrite=False, resume=False)
    try:
        assert (out / LOCK).read_text().startswith(f"pid {os.getpid()} on ")
        with pytest.raises(RunLockedError):
            claim_run_dir(out, overwrite=False, resume=False)
    finally:
        lock.release()
    assert not (out / LOCK).exists()


def test_run_finished_between_check_and_lock_is_still_refused(tmp_path, monkeypatch):
    """claim_run_dir checks again once it holds the lock (the other run may just have ended)."""
    out = tmp_path / "run"
    real_acquire = RunLock.acquire

    def other_run_finishes_first(self: RunLock) -> None:
        (out / "metrics.json").parent.mkdir(parents=True, exist_ok=True)
        (out / "metrics.json").write_text("{}")
        (out / FINISHED).write_text("now\n")
        real_acquire(self)

    monkeypatch.setattr(RunLock, "acquire", other_run_finishes_first)
    with pytest.raises(RunFinishedError):
        claim_run_dir(out, overwrite=False, resume=False)
    assert not (out / LOCK).exists()  # released on the way out


# --------------------------------------------------------------------------- lock

HOLD_LOCK = textwrap.dedent(
    """
    import sys, time
    from pathlib import Path
    from finetune.run.files import RunLock
    lock = RunLock(Path(sys.argv[1]))
    lock.acquire()
    print("locked", flush=True)
    time.sleep(float(sys.argv[2]))
    """
)


@pytest.fixture()
def held_lock(tmp_path):
    """Another process holding the run lock on tmp_path/run for as long as the test runs."""
    out = tmp_path / "run"
    proc = subprocess.Popen(
        [sys.executable, "-c", HOLD_LOCK, str(out), "120"], stdout=subprocess.PIPE, text=True
    )
    assert proc.stdout is not None and proc.stdout.readline().strip() == "locked"
    yield out, proc
    proc.kill()
    proc.wait()


def test_second_run_refuses_while_another_holds_the_lock(held_lock):
    out, proc = held_lock
    with pytest.raises(RunLockedError) as excinfo:
        RunLock(out).acquire()
    text = excinfo.value.render()
    assert "another run is writing here" in text and f"pid {proc.pid}" in text
    assert "E402" in text


def test_second_run_via_cli_refuses(held_lock, tmp_path, runner, sentiment_files):
    out, proc = held_lock
    result = runner.invoke(app, ["run", str(recipe_file(tmp_path, sentiment_files, out))])
    assert result.exit_code == 2, result.output
    assert "another run is writing here" in result.output and str(proc.pid) in result.output
    assert (out / LOCK).exists()  # the holder's lock is untouched


def test_lock_is_released_when_the_holder_dies(held_lock):
    out, proc = held_lock
    proc.kill()
    proc.wait()
    lock = RunLock(out)
    lock.acquire()
    assert f"pid {os.getpid()}" in (out / LOCK).read_text()
    lock.release()
    assert not (out / LOCK).exists()


def test_lock_retries_when_its_file_was_unlinked_under_it(tmp_path, monkeypatch):
    """A finishing run unlinks `.lock`; whoever locked the old inode must not think it won."""
    out = tmp_path / "run"
    out.mkdir()
    lock = RunLock(out)
    real_try = RunLock._try_lock
    calls = []

    def lock_then_lose_the_file(self: RunLock) -> Any:
        handle = real_try(self)
        calls.append(1)
        if len(calls) == 1:
            self.path.unlink()  # as if the previous owner released between open and flock
        return handle

    monkeypatch.setattr(RunLock, "_try_lock", lock_then_lose_the_file)
    lock.acquire()
    assert len(calls) == 2 and os.fstat(lock.handle.fileno()).st_ino == os.stat(lock.path).st_ino
    lock.release()


# --------------------------------------------------------------------------- atomic writes


class FakeAccelerator:
    """Enough of Accelerator for save_checkpoint; the n-th save fails like a full disk."""

    num_processes = 1
    is_main_process = True

    def __init__(self, fail_on: int, error: BaseException) -> None:
        self.calls, self.fail_on, self.error = 0, fail_on, error

    def wait_for_everyone(self) -> None:
        pass

    def save_state(self, directory: str) -> None:
        self.calls += 1
        Path(directory, "model.safetensors").write_bytes(b"w" * 1000 * self.calls)
        if self.calls == self.fail_on:
            Path(directory, "optimizer.bin").write_bytes(b"partial")
            raise self.error
        Path(directory, "optimizer.bin").write_bytes(b"o" * 100)


def state(step: int) -> TrainState:
    return TrainState(global_step=step, epoch=0, batches_in_epoch=step, samples=8 * step)


@pytest.mark.parametrize(
    "error, reason",
    [
        (ENOSPC, "No space left on device"),
        (
            RuntimeError(
                "[enforce fail at inline_container.cc:603] . PytorchStreamWriter "
                "failed writing file data/0: file write failed"
            ),
            "file write failed",
        ),
    ],
    ids=["oserror", "torch-runtimeerror"],
)
def test_failed_checkpoint_keeps_the_previous_one(tmp_path, error, reason):
    checkpoints = tmp_path / "checkpoints"
    accelerator = FakeAccelerator(fail_on=2, error=error)
    save_checkpoint(accelerator, checkpoints, state(2), keep=1)
    good = snapshot(tmp_path / "checkpoints")
    with pytest.raises(CheckpointError) as excinfo:
        save_checkpoint(accelerator, checkpoints, state(4), keep=1)
    text = excinfo.value.render()
    assert "could not write" in text and "step-00000004" in text and reason in text
    assert "previous version (if any) is intact" in text and "--resume" in text
    assert snapshot(tmp_path / "checkpoints") == good  # step 2 intact, no temp dirs left
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == ["step-00000002"]


def test_replacing_a_directory_restores_it_if_the_rename_fails(tmp_path, monkeypatch):
    dest = tmp_path / "adapter"
    dest.mkdir()
    (dest / "weights").write_text("old")
    real_replace = os.replace

    def rename_fails_into_dest(src: Any, dst: Any) -> None:
        if Path(dst) == dest and ".tmp-" in str(src):
            raise OSError(errno.EIO, "Input/output error")
        real_replace(src, dst)

    monkeypatch.setattr(os, "replace", rename_fails_into_dest)
    with pytest.raises(CheckpointError, match="Input/output error"), atomic_dir(dest) as tmp:
        (tmp / "weights").write_text("new")
    assert (dest / "weights").read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["adapter"]


def test_a_bug_inside_atomic_dir_is_not_disguised_as_disk_full(tmp_path):
    with pytest.raises(KeyError), atomic_dir(tmp_path / "adapter"):
        raise KeyError("bug")
    assert list(tmp_path.iterdir()) == []


def test_failed_file_write_keeps_the_old_file(tmp_path, monkeypatch):
    path = tmp_path / "metrics.json"
    atomic_write_text(path, "old\n")

    def full_disk(fd: int) -> None:
        raise ENOSPC

    monkeypatch.setattr(os, "fsync", full_disk)
    with pytest.raises(CheckpointError, match="No space left on device"):
        atomic_write_text(path, "new\n")
    assert path.read_text() == "old\n" and [p.name for p in tmp_path.iterdir()] == [path.name]


def test_log_append_failure_is_clear(tmp_path):
    (tmp_path / "log.jsonl").mkdir()  # appending to a directory fails like a bad disk
    with pytest.raises(CheckpointError, match=r"could not write .*log\.jsonl"):
        append_jsonl(tmp_path / "log.jsonl", {"step": 1})


def test_disk_full_during_a_real_run(
    tmp_path, runner, tiny_model_dir, sentiment_files, monkeypatch
):
    """A tiny run whose second checkpoint hits ENOSPC: exit 2, first checkpoint resumable."""
    from accelerate import Accelerator

    train, dev = sentiment_files
    out = tmp_path / "run"
    data = classification_recipe(
        tiny_model_dir("bert"), train, dev, out, {"name": "lora"}, epochs=1, save_steps=2
    )
    real_save = Accelerator.save_state
    calls: list[str] = []

    def save_until_full(self: Any, output_dir: str | None = None, **kwargs: Any) -> Any:
        calls.append(output_dir or "")
        if len(calls) == 2:
            Path(output_dir or ".", "model.safetensors").write_bytes(b"partial")
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_save(self, output_dir, **kwargs)

    monkeypatch.setattr(Accelerator, "save_state", save_until_full)
    result = runner.invoke(
        app, ["run", str(write_recipe(tmp_path / "r.yaml", data)), "--no-progress"]
    )
    assert result.exit_code == 2, result.output
    assert "No space left on device" in result.output and "step-00000004" in result.output
    assert "Traceback" not in result.output
    checkpoints = sorted(p.name for p in (out / "checkpoints").iterdir())
    assert checkpoints == ["step-00000002"]
    saved = json.loads((out / "checkpoints" / "step-00000002" / "trainer_state.json").read_text())
    assert saved["global_step"] == 2 and not (out / FINISHED).exists()
    assert not (out / LOCK).exists()
