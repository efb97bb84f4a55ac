"""Checkpoints: the typed state a run resumes from, written atomically, verified, pruned.

Names come from `finetune.run.layout`. A checkpoint is written into a hidden temporary
directory and renamed into place once complete; its trainer state is written last and carries
a manifest (size and SHA-256 of every other file), so a checkpoint that was truncated,
corrupted or copied half-way is recognised before any weight loads (`checkpoint_problem`) and
`--resume` falls back to the previous complete one.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, TypedDict

from finetune.errors import first_line
from finetune.jsonvalues import as_object
from finetune.run.files import atomic_dir, atomic_write_json, file_sha256
from finetune.run.layout import (
    CORRUPT_PREFIX,
    TRAINER_STATE,
    checkpoint_name,
    complete_checkpoints,
    is_partial_checkpoint,
)
from finetune.train.sharded import distributed_kind

if TYPE_CHECKING:  # pragma: no cover
    from finetune.types import JSON, Accelerator, JSONObject, Model, StateDict

log = logging.getLogger(__name__)

ENGINE_SAVE = ("FSDP", "DEEPSPEED", "MEGATRON_LM")

# seconds to sleep with a checkpoint fully written but not yet renamed into place: lets the
# kill -9 tests hit the most dangerous moment of a checkpoint write
STALL_ENV = "FINETUNE_TEST_STALL_CHECKPOINT"


class FileEntry(TypedDict, total=False):
    """A checkpoint file as the manifest records it (checkpoints written before manifests
    existed have neither key)."""

    bytes: int
    sha256: str


@dataclass
class TrainState:
    """Where a run stands after an optimizer step: the one state the loop advances, and
    everything `--resume` needs beyond what Accelerate's `save_state` holds (model, optimizer,
    scheduler, every device's RNG)."""

    global_step: int = 0
    epoch: int = 0  # the epoch to continue in (the next one once an epoch's last step ran)
    batches_in_epoch: int = 0  # this process's batches of that epoch already trained
    samples: int = 0
    train_seconds: float = 0.0
    # the loss summed since the last log line, so the next logged loss covers the same steps
    running_loss: float = 0.0
    running_tokens: float = 0.0
    last_loss: float | None = None
    # stopped by a signal before this step's evaluation: the resumed run evaluates first
    eval_pending_epoch: int | None = None
    fingerprint: JSONObject = field(default_factory=dict)  # run.fingerprint
    files: dict[str, FileEntry] = field(default_factory=dict)  # manifest, set on save
    last_eval_step: int | None = None  # the step of the latest evaluation during training
    stopped_early: bool = False  # hooks.after_eval asked to stop (early stopping)

    @property
    def samples_per_second(self) -> float:
        return self.samples / self.train_seconds if self.train_seconds else 0.0

    @property
    def last_epoch(self) -> int:
        """The epoch the latest step belonged to."""
        return max(self.epoch - 1, 0) if self.batches_in_epoch == 0 else self.epoch

    @classmethod
    def read(cls, checkpoint: Path) -> TrainState:
        data = json.loads((checkpoint / TRAINER_STATE).read_text())
        known = {k: data[k] for k in cls.__dataclass_fields__ if k in data}
        return cls(**known)


def save_checkpoint(
    accelerator: Accelerator, directory: Path | None, state: TrainState, keep: int
) -> Path | None:
    """Checkpoint into a temporary dir, then rename: a failed or killed write never harms the
    previous one and is never read. Every process joins (each writes its own RNG state);
    only the main process writes the trainer state and renames."""
    if directory is None:
        return None
    dest = directory / checkpoint_name(state.global_step)
    accelerator.wait_for_everyone()
    if accelerator.num_processes > 1:
        # every rank writes its RNG state; a shared temp dir needs a deterministic name
        dest_tmp = directory / f".tmp-{dest.name}"
        if accelerator.is_main_process and dest_tmp.exists():
            shutil.rmtree(dest_tmp)  # left by a killed run: its files must not join the manifest
        accelerator.wait_for_everyone()
        accelerator.save_state(str(dest_tmp))
        accelerator.wait_for_everyone()
        if accelerator.is_main_process:
            seal(dest_tmp, state)
            if dest.exists():
                shutil.rmtree(dest)
            dest_tmp.replace(dest)
    else:
        with atomic_dir(dest) as tmp:
            accelerator.save_state(str(tmp))
            seal(tmp, state)
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        prune_checkpoints(directory, keep)
    return dest


def keep_only_trainable(accelerator: Accelerator, model: Model) -> None:
    """An adapter run's checkpoints hold the trainable tensors only.

    Accelerate's `save_state` writes the whole model, and the frozen base never changes: a
    LoRA checkpoint of bert-base was 420 MiB for 1.2 MiB of adapter (a 7B base: 14 GB per
    checkpoint, and seconds of a GPU's time to write and checksum). The base comes back from
    `model.name` on resume; `resume_weights` loads the rest and checks that every trainable
    tensor was there. Engines that save the model themselves (FSDP, DeepSpeed) are left alone.
    """
    if _engine_saves(accelerator):
        return
    names = _trainable_names(model, remove_duplicate=False)

    def drop_frozen(models: list[Model], weights: list[StateDict], output_dir: str) -> None:
        for state in weights:
            for key in [k for k in state if _plain(k) not in names]:
                del state[key]

    accelerator.register_save_state_pre_hook(drop_frozen)


def _engine_saves(accelerator: Accelerator) -> bool:
    """FSDP, DeepSpeed and Megatron checkpoint the model their own way: accelerate's save hooks
    never see it and their loaders take other arguments."""
    return distributed_kind(accelerator) in ENGINE_SAVE


def _trainable_names(model: Model, remove_duplicate: bool = True) -> set[str]:
    found = model.named_parameters(remove_duplicate=remove_duplicate)
    return {_plain(name) for name, param in found if param.requires_grad}


def _plain(name: str) -> str:
    """A parameter's name without DDP's `module.` (accelerate writes the unwrapped names)."""
    return name.removeprefix("module.")


def resume_weights(accelerator: Accelerator, model: Model, checkpoint: Path) -> None:
    """`load_state` without requiring the frozen base in the checkpoint (see
    `keep_only_trainable`), then the check that strict loading did before: every trainable
    tensor of this model was in it."""
    if _engine_saves(accelerator):  # DeepSpeed's load_checkpoint takes no `strict`
        accelerator.load_state(str(checkpoint))
        return
    accelerator.load_state(str(checkpoint), strict=False)
    weights = checkpoint / "model.safetensors"
    if not weights.is_file():  # .bin or an engine's own format: accelerate checked it
        return
    from safetensors import safe_open

    with safe_open(str(weights), framework="pt") as handle:
        saved = {_plain(key) for key in handle.keys()}  # noqa: SIM118 (not iterable)
    missing = sorted(_trainable_names(model) - saved)
    if missing:
        from finetune.errors import ResumeMismatchError

        raise ResumeMismatchError(
            f"{checkpoint}: holds no value for {len(missing)} trainable tensors "
            f"({', '.join(missing[:3])}{', ...' if len(missing) > 3 else ''})",
            fix="resume with the recipe (method, targets, number of processes) that wrote the "
            "checkpoint, or start again with --overwrite",
        )


def seal(tmp: Path, state: TrainState) -> None:
    """Write the trainer state with the manifest of everything else, last."""
    state.files = manifest(tmp)
    atomic_write_json(tmp / TRAINER_STATE, asdict(state))
    stall = float(os.environ.get(STALL_ENV) or 0)
    if stall > 0:
        time.sleep(stall)


def manifest(directory: Path) -> dict[str, FileEntry]:
    return {
        path.relative_to(directory).as_posix(): {
            "bytes": path.stat().st_size,
            "sha256": file_sha256(path),
        }
        for path in sorted(directory.rglob("*"))
        if path.is_file() and path.name != TRAINER_STATE
    }


def checkpoint_problem(checkpoint: Path) -> str | None:
    """Why a complete-looking checkpoint cannot be resumed from, or None if it can.

    Reads only the trainer state, file sizes, safetensors headers and checksums: no tensor is
    loaded, so a bad checkpoint is skipped before it can half-load into the model.
    """
    try:
        data = json.loads((checkpoint / TRAINER_STATE).read_text())
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        return f"{TRAINER_STATE} is unreadable or half-written ({first_line(exc)})"
    if not isinstance(data, dict) or not isinstance(data.get("global_step"), int):
        return f"{TRAINER_STATE} has no global_step"
    files = as_object(data.get("files"))
    if not files:  # written before checkpoints carried a manifest: structure checks only
        files = {
            p.relative_to(checkpoint).as_posix(): {}
            for p in checkpoint.rglob("*")
            if p.is_file() and p.name != TRAINER_STATE
        }
    entries = {name: as_object(entry) for name, entry in files.items()}
    for name, entry in entries.items():
        problem = _file_problem(checkpoint / name, entry)
        if problem:
            return f"{name}: {problem}"
    for name, entry in entries.items():
        if "sha256" in entry and file_sha256(checkpoint / name) != entry["sha256"]:
            return f"{name}: contents differ from the checksum written with it (corrupted)"
    return None


def _file_problem(path: Path, entry: Mapping[str, JSON]) -> str | None:
    if not path.is_file():
        return "missing"
    size = path.stat().st_size
    if "bytes" in entry and size != entry["bytes"]:
        return f"{size} bytes, but {entry['bytes']} were written (truncated or replaced)"
    if path.suffix == ".safetensors":
        return safetensors_problem(path, size)
    return None


def safetensors_problem(path: Path, size: int) -> str | None:
    """A safetensors file is an 8-byte header length, a JSON header, then exactly the bytes
    its tensors' offsets say; anything else was cut short or overwritten."""
    with path.open("rb") as handle:
        head = handle.read(8)
        if len(head) < 8:
            return "too short for a safetensors header"
        length = int.from_bytes(head, "little")
        if length > size - 8:
            return "safetensors header runs past the end of the file"
        try:
            header = json.loads(handle.read(length))
            ends = [v["data_offsets"][1] for k, v in header.items() if k != "__metadata__"]
        except (ValueError, TypeError, KeyError, IndexError, AttributeError):
            return "bad safetensors header"
    if 8 + length + max(ends, default=0) != size:
        return "safetensors tensor data does not match the file size"
    return None


def usable_checkpoint(directory: Path) -> tuple[Path | None, list[tuple[Path, str]]]:
    """The newest checkpoint that passes `checkpoint_problem`, and the newer ones that did not
    (with their problem), newest first."""
    skipped: list[tuple[Path, str]] = []
    for checkpoint in reversed(complete_checkpoints(directory)):
        problem = checkpoint_problem(checkpoint)
        if problem is None:
            return checkpoint, skipped
        skipped.append((checkpoint, problem))
    return None, skipped


def set_aside(checkpoint: Path) -> Path:
    """Rename a bad checkpoint out of the `step-*` namespace: kept for inspection, never
    resumed from, and never counted by pruning (which would otherwise keep it over a new one)."""
    target = checkpoint.with_name(CORRUPT_PREFIX + checkpoint.name)
    if target.exists():
        shutil.rmtree(target)
    os.replace(checkpoint, target)
    return target


def clean_partial_checkpoints(directory: Path) -> None:
    """Remove what a killed run left mid-write (never read, but it fills the disk); a parked
    `.step-N.old` whose replacement never arrived is put back."""
    if not directory.is_dir():
        return
    for path in directory.iterdir():
        if not is_partial_checkpoint(path):
            continue
        original = path.with_name(path.name[1:].removesuffix(".old"))
        if path.name.endswith(".old") and not original.exists():
            os.replace(path, original)
        elif path.is_dir():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)


def prune_checkpoints(directory: Path, keep: int) -> None:
    """Delete all but the newest `keep`; each is renamed to a hidden name first, so a kill in
    the middle of a delete leaves a partial directory that is never read."""
    for old in complete_checkpoints(directory)[:-keep]:
        parked = old.with_name(f".{old.name}.deleting")
        os.replace(old, parked)
        shutil.rmtree(parked, ignore_errors=True)


def latest_checkpoint(directory: Path) -> Path | None:
    done = complete_checkpoints(directory)
    return done[-1] if done else None
