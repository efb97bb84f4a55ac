"""Checkpoints: the typed state a run resumes from, written atomically, pruned, found again.

Names come from `finetune.run.layout`; a checkpoint counts only once its trainer state is
written (last), so a checkpoint interrupted mid-write is never resumed from.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from finetune.run.files import atomic_dir, atomic_write_json
from finetune.run.layout import TRAINER_STATE, checkpoint_name, complete_checkpoints


@dataclass
class TrainState:
    """Where a run stands after an optimizer step: everything `--resume` needs beyond what
    Accelerate's `save_state` holds (model, optimizer, scheduler, RNG)."""

    global_step: int = 0
    epoch: int = 0  # the epoch to continue in
    batches_in_epoch: int = 0  # this process's batches of that epoch already trained
    samples: int = 0
    train_seconds: float = 0.0

    @classmethod
    def read(cls, checkpoint: Path) -> TrainState:
        data = json.loads((checkpoint / TRAINER_STATE).read_text())
        known = {k: data[k] for k in cls.__dataclass_fields__ if k in data}
        return cls(**known)


def save_checkpoint(accelerator: Any, directory: Path | None, state: TrainState, keep: int) -> None:
    """Checkpoint into a temporary dir, then rename: a failed write never harms the last one."""
    if directory is None:
        return
    dest = directory / checkpoint_name(state.global_step)
    accelerator.wait_for_everyone()
    if accelerator.num_processes > 1:
        # every rank writes its RNG state; a shared temp dir needs a deterministic name
        dest_tmp = directory / f".tmp-{dest.name}"
        accelerator.save_state(str(dest_tmp))
        accelerator.wait_for_everyone()
        if accelerator.is_main_process:
            atomic_write_json(dest_tmp / TRAINER_STATE, asdict(state))
            dest_tmp.replace(dest)
    else:
        with atomic_dir(dest) as tmp:
            accelerator.save_state(str(tmp))
            atomic_write_json(tmp / TRAINER_STATE, asdict(state))
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        prune_checkpoints(directory, keep)


def prune_checkpoints(directory: Path, keep: int) -> None:
    for old in complete_checkpoints(directory)[:-keep]:
        shutil.rmtree(old, ignore_errors=True)


def latest_checkpoint(directory: Path) -> Path | None:
    done = complete_checkpoints(directory)
    return done[-1] if done else None
