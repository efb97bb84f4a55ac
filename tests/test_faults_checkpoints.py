"""Issue #13: checkpoints verified before any weight loads, the run fingerprint `--resume`
compares, the resume command, and the signal handler's second-signal and multi-process rules.

Checkpoints here are written by `save_checkpoint` through a stand-in for Accelerate's
`save_state` (a safetensors file, a torch pickle, an RNG file), so no model is needed.
"""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path
from typing import Any

import pytest

from finetune.errors import CheckpointCorruptError, FinetuneError, ResumeMismatchError
from finetune.run.resume import choose_checkpoint, resume_command
from finetune.train.checkpoints import (
    TrainState,
    checkpoint_problem,
    save_checkpoint,
)

FINGERPRINT = {"recipe": {"train.lr": 0.001}, "train_data": {"train.csv": "ab"}, "processes": 1}


class FakeAccelerator:
    num_processes = 1
    process_index = 0
    is_main_process = True

    def wait_for_everyone(self) -> None:
        pass

    def save_state(self, directory: str) -> None:
        import torch
        from safetensors.torch import save_file

        save_file({"w": torch.arange(64, dtype=torch.float32)}, f"{directory}/model.safetensors")
        torch.save({"state": {"m": torch.ones(16)}}, f"{directory}/optimizer.bin")
        torch.save({"torch_manual_seed": torch.get_rng_state()}, f"{directory}/random_states_0.pkl")


def _run_dir(tmp_path: Path, steps: tuple[int, ...] = (2, 4), keep: int = 5) -> Path:
    out = tmp_path / "run"
    for step in steps:
        state = TrainState(global_step=step, fingerprint=FINGERPRINT)
        save_checkpoint(FakeAccelerator(), out / "checkpoints", state, keep)
    lines = [{"step": s, "loss": 1.0 / s} for s in range(1, max(steps) + 3)]
    (out / "log.jsonl").write_text("".join(json.dumps(r) + "\n" for r in lines) + '{"step": 9, "lo')
    return out


def _ckpt(out: Path, step: int) -> Path:
    return out / "checkpoints" / f"step-{step:08d}"


def _truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[:-10])


def _flip_byte(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))


def _bad_header(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[8:12] = b"{{{{"
    path.write_bytes(bytes(data))


def _huge_header(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[:8] = (10**12).to_bytes(8, "little")
    path.write_bytes(bytes(data))


CORRUPTIONS = {
    "missing optimizer": ("optimizer.bin", lambda p: p.unlink(), "missing"),
    "missing rng": ("random_states_0.pkl", lambda p: p.unlink(), "missing"),
    "truncated weights": ("model.safetensors", _truncate, "truncated"),
    "bad safetensors json": ("model.safetensors", _bad_header, "bad safetensors header"),
    "header past the end": ("model.safetensors", _huge_header, "runs past the end"),
    "flipped byte": ("optimizer.bin", _flip_byte, "checksum"),
    "half-written state": ("trainer_state.json", _truncate, "half-written"),
}


@pytest.mark.parametrize("kind", sorted(CORRUPTIONS))
def test_a_corrupted_newest_checkpoint_is_skipped_for_the_previous_one(tmp_path, caplog, kind):
    name, damage, expected = CORRUPTIONS[kind]
    out = _run_dir(tmp_path)
    assert checkpoint_problem(_ckpt(out, 4)) is None
    damage(_ckpt(out, 4) / name)
    problem = checkpoint_problem(_ckpt(out, 4))
    assert problem is not None and expected in problem and name in problem
    chosen = choose_checkpoint(out, FINGERPRINT, keep=5)
    assert chosen == _ckpt(out, 2)
    assert f"step-00000004 is unusable ({name}" in caplog.text
    # set aside, so that pruning after the next save can never keep it over a good one
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == [
        "corrupt-step-00000004",
        "step-00000002",
    ]
    # log lines after the checkpoint's step (and the line cut short by a kill) are dropped
    steps = [json.loads(line)["step"] for line in (out / "log.jsonl").read_text().splitlines()]
    assert steps == [1, 2]


def test_no_usable_checkpoint_is_refused_naming_each(tmp_path):
    out = _run_dir(tmp_path)
    (_ckpt(out, 4) / "model.safetensors").unlink()
    _truncate(_ckpt(out, 2) / "optimizer.bin")
    with pytest.raises(CheckpointCorruptError) as excinfo:
        choose_checkpoint(out, FINGERPRINT, keep=5)
    message = excinfo.value.render()
    assert "step-00000004: model.safetensors: missing" in message
    assert "step-00000002: optimizer.bin" in message and "--overwrite" in message
    assert (out / "checkpoints" / "step-00000004").is_dir()  # refused: nothing moved


def test_no_checkpoint_at_all_is_refused(tmp_path):
    (tmp_path / "run" / "checkpoints").mkdir(parents=True)
    with pytest.raises(FinetuneError, match="no checkpoint to resume from"):
        choose_checkpoint(tmp_path / "run", FINGERPRINT, keep=1)


def test_half_written_checkpoints_are_never_read_and_are_cleaned(tmp_path):
    """What a kill leaves: a complete-looking temporary directory (killed just before its
    rename), a checkpoint parked mid-swap, one half-deleted by pruning, and two complete ones
    (killed between the rename and the prune, keep_checkpoints 1)."""
    import shutil

    out = _run_dir(tmp_path, steps=(2, 4, 6))
    ckpts = out / "checkpoints"
    shutil.copytree(_ckpt(out, 6), ckpts / ".step-00000008.tmp-abc")
    os.replace(_ckpt(out, 6), ckpts / ".step-00000006.old")
    shutil.copytree(_ckpt(out, 2), ckpts / ".step-00000001.deleting")
    (ckpts / ".step-00000001.deleting" / "model.safetensors").unlink()
    chosen = choose_checkpoint(out, FINGERPRINT, keep=1)
    assert chosen == _ckpt(out, 6)  # put back from .old, then verified
    assert sorted(p.name for p in ckpts.iterdir()) == ["step-00000006"]


def test_a_killed_prune_never_leaves_a_readable_half(tmp_path, monkeypatch):
    """Pruning renames a checkpoint to a hidden name before deleting it."""
    import shutil

    import finetune.train.checkpoints as checkpoints

    def die(path: Any, ignore_errors: bool = False) -> None:
        raise KeyboardInterrupt

    out = _run_dir(tmp_path, steps=(2,))
    monkeypatch.setattr(checkpoints.shutil, "rmtree", die)
    with pytest.raises(KeyboardInterrupt):
        save_checkpoint(FakeAccelerator(), out / "checkpoints", TrainState(global_step=4), 1)
    monkeypatch.setattr(checkpoints.shutil, "rmtree", shutil.rmtree)
    names = sorted(p.name for p in (out / "checkpoints").iterdir())
    assert names == [".step-00000002.deleting", "step-00000004"]


def test_stalled_write_is_hidden_until_renamed(tmp_path, monkeypatch):
    """The test hook the kill -9 test uses: during the stall the checkpoint is complete but
    still under its temporary name, which nothing reads."""
    import finetune.train.checkpoints as checkpoints
    from finetune.run.layout import complete_checkpoints

    seen: list[list[str]] = []
    ckpts = tmp_path / "checkpoints"
    monkeypatch.setenv(checkpoints.STALL_ENV, "0.01")
    monkeypatch.setattr(
        checkpoints.time, "sleep", lambda s: seen.append([p.name for p in ckpts.iterdir()])
    )
    save_checkpoint(FakeAccelerator(), ckpts, TrainState(global_step=3), 1)
    assert len(seen) == 1 and seen[0][0].startswith(".step-00000003.tmp-")
    assert complete_checkpoints(ckpts) == [ckpts / "step-00000003"]


# --------------------------------------------------------------------------- fingerprint


def _recipe(tmp_path: Path, **train: Any) -> Any:
    from finetune.recipe.schema import Recipe

    data = tmp_path / "train.csv"
    if not data.exists():
        data.write_text("text,label\ngood,pos\nbad,neg\n")
    return Recipe.model_validate(
        {
            "model": {"name": "bundled:minilm-l6"},
            "task": {"type": "classification"},
            "data": {"train": str(data)},
            "method": {"name": "lora"},
            "train": train,
        }
    )


def test_fingerprint_names_what_changed(tmp_path):
    from finetune.run.fingerprint import differences, run_fingerprint

    before = run_fingerprint(_recipe(tmp_path, lr=1e-3), tmp_path, 1)
    same = run_fingerprint(
        _recipe(tmp_path, lr=1e-3, logging_steps=1, save_steps=3, eval_steps=2), tmp_path, 1
    )
    assert differences(before, same) == []
    changed = run_fingerprint(_recipe(tmp_path, lr=2e-3, seed=7), tmp_path, 2)
    assert differences(before, changed) == [
        "train.lr: 0.001 -> 0.002",
        "train.seed: 42 -> 7",
        "processes: 1 -> 2",
    ]
    (tmp_path / "train.csv").write_text("text,label\ngood,pos\nbad,neg\nok,pos\n")
    edited = run_fingerprint(_recipe(tmp_path, lr=1e-3), tmp_path, 1)
    assert differences(before, edited) == ["train data changed (content hash of train.csv)"]


def test_changed_fingerprint_is_refused_before_anything_moves(tmp_path):
    out = _run_dir(tmp_path)
    (_ckpt(out, 4) / "optimizer.bin").unlink()  # would be set aside by an accepted resume
    log_before = (out / "log.jsonl").read_text()
    changed = {**FINGERPRINT, "recipe": {"train.lr": 0.002}}
    with pytest.raises(ResumeMismatchError) as excinfo:
        choose_checkpoint(out, changed, keep=1)
    assert "cannot resume from step-00000002: train.lr: 0.001 -> 0.002" in excinfo.value.message
    assert excinfo.value.exit_code == 2 and "output" in excinfo.value.fix
    assert (out / "log.jsonl").read_text() == log_before
    assert _ckpt(out, 4).is_dir()


def test_resume_command_repeats_the_recipe_and_overrides_as_given():
    command = resume_command(Path("recipes/q.yaml"), ["train.lr=1e-4", "a.b=x y"], False, 1)
    assert command == "finetune run recipes/q.yaml train.lr=1e-4 'a.b=x y' --resume --no-progress"
    two = resume_command(Path("q.yaml"), [], True, 2)
    assert two == "accelerate launch --num_processes 2 -m finetune run q.yaml --resume"


# --------------------------------------------------------------------------- signals


@pytest.mark.parametrize(
    ("sig", "second"), [(signal.SIGINT, KeyboardInterrupt), (signal.SIGTERM, SystemExit)]
)
def test_the_second_signal_quits_at_once(sig, second):
    from finetune.train.signals import stop_on_signals

    before = signal.getsignal(sig)  # SIG_IGN when the suite runs in a background job
    with stop_on_signals() as stop:
        os.kill(os.getpid(), sig)
        assert stop.signum == sig  # the first one only records itself
        with pytest.raises(second) as excinfo:
            os.kill(os.getpid(), sig)
            for _ in range(1000):  # the handler runs between bytecodes
                pass
    if second is SystemExit:
        assert excinfo.value.code == 143
    assert signal.getsignal(sig) == before  # the handler it found is back


def test_every_process_agrees_on_the_stop(monkeypatch):
    """Only one rank was signalled; the all-reduced maximum stops them all at the same step.
    The collective runs on a CPU tensor over a gloo group of its own, made once: a GPU tensor
    would make every step wait for the GPU (torchrun runs of it: test_faults_cli.py)."""
    import torch
    import torch.distributed as dist

    from finetune.train.signals import StopRequest

    other = {"signum": 0}
    groups: list[str] = []

    def new_group(backend: str) -> str:
        groups.append(backend)
        return "gloo-group"

    def all_reduce(tensor: Any, op: Any, group: Any) -> None:
        assert tensor.device.type == "cpu" and group == "gloo-group" and op == dist.ReduceOp.MAX
        tensor.copy_(torch.maximum(tensor, torch.tensor([other["signum"]])))

    monkeypatch.setattr(dist, "new_group", new_group)
    monkeypatch.setattr(dist, "all_reduce", all_reduce)

    class TwoRanks:
        num_processes = 2
        device = torch.device("cuda")  # never touched: the flag stays on the CPU

    quiet = StopRequest()
    assert quiet.agreed(TwoRanks()) is None
    other["signum"] = int(signal.SIGTERM)
    assert quiet.agreed(TwoRanks()) == "SIGTERM"
    other["signum"] = 0
    quiet.signum = int(signal.SIGINT)
    assert quiet.agreed(TwoRanks()) == "SIGINT"
    assert groups == ["gloo"]


def test_adapter_checkpoint_keeps_trainable_tensors_and_resume_checks_them(tmp_path):
    """An adapter run's checkpoint drops the frozen base (it comes back from the model name);
    loading one into a model with a trainable tensor it lacks is refused, naming the tensor."""
    import torch
    from accelerate import Accelerator
    from safetensors import safe_open

    from finetune.errors import ResumeMismatchError
    from finetune.train.checkpoints import keep_only_trainable, resume_weights

    def model(extra: bool) -> torch.nn.Module:
        torch.manual_seed(0)
        net = torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.Linear(4, 2))
        net[0].requires_grad_(False)  # the frozen "base"
        if extra:
            net.add_module("head", torch.nn.Linear(2, 2))
        return net

    accelerator = Accelerator(cpu=True)
    trained = accelerator.prepare(model(extra=False))
    keep_only_trainable(accelerator, trained)
    with torch.no_grad():
        trained[1].weight.add_(1.0)
    accelerator.save_state(str(tmp_path / "ckpt"))
    with safe_open(str(tmp_path / "ckpt" / "model.safetensors"), framework="pt") as handle:
        assert sorted(handle.keys()) == ["1.bias", "1.weight"]

    fresh = Accelerator(cpu=True)
    again = fresh.prepare(model(extra=False))
    resume_weights(fresh, again, tmp_path / "ckpt")
    assert torch.equal(again[1].weight, trained[1].weight)  # the trained tensor came back
    assert torch.equal(again[0].weight, trained[0].weight)  # the base, from the model itself

    other = Accelerator(cpu=True)
    bigger = other.prepare(model(extra=True))
    with pytest.raises(ResumeMismatchError, match=r"head\.weight"):
        resume_weights(other, bigger, tmp_path / "ckpt")
