"""`--resume`: which checkpoint to continue from, whether it may be continued, and how to say
how to continue a stopped run.

Everything here runs on the main process, under the run lock, before any weight loads: what a
killed write left is removed (never read), the newest checkpoint is verified
(`checkpoint_problem`) and compared with this run's fingerprint, and only once it is accepted
are bad newer ones set aside, old ones pruned to `keep_checkpoints`, and log lines after the
checkpoint's step dropped, so log.jsonl reads as one run.
"""

from __future__ import annotations

import json
import logging
import shlex
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING

from finetune.errors import CheckpointCorruptError, FinetuneError, ResumeMismatchError
from finetune.run.files import atomic_write_text
from finetune.run.fingerprint import RESUMABLE_KEYS, differences
from finetune.run.layout import RunPaths
from finetune.train.checkpoints import (
    TrainState,
    clean_partial_checkpoints,
    prune_checkpoints,
    set_aside,
    usable_checkpoint,
)
from finetune.train.signals import TrainingStopped

if TYPE_CHECKING:  # pragma: no cover
    from finetune.types import JSON

log = logging.getLogger(__name__)


def choose_checkpoint(out: Path, fingerprint: Mapping[str, JSON], keep: int) -> Path:
    """The newest checkpoint that is intact and was trained by this recipe on this data."""
    directory = RunPaths(out).checkpoints
    clean_partial_checkpoints(directory)  # first: it may put back a checkpoint parked mid-swap
    checkpoint, skipped = usable_checkpoint(directory)
    if checkpoint is None:
        if skipped:
            listed = "; ".join(f"{path.name}: {problem}" for path, problem in skipped)
            raise CheckpointCorruptError(
                f"{out}: no usable checkpoint: {listed}",
                fix="start again with --overwrite (nothing above can be loaded)",
            )
        raise FinetuneError(
            f"{out}: --resume given but there is no checkpoint to resume from",
            fix="run without --resume (with --overwrite if the directory holds a run)",
        )
    state = TrainState.read(checkpoint)
    changed = differences(state.fingerprint, fingerprint)
    if changed:
        raise ResumeMismatchError(
            f"{out}: cannot resume from {checkpoint.name}: " + "; ".join(changed),
            fix="undo these changes (the run's recipe.yaml holds what it was started with), or "
            "start again with --overwrite or another output.dir; only "
            + ", ".join(RESUMABLE_KEYS)
            + " may change on --resume",
        )
    for path, problem in skipped:
        moved = set_aside(path)
        log.warning("checkpoint %s is unusable (%s); moved to %s", path.name, problem, moved.name)
    if skipped:
        log.warning("resuming from the previous complete checkpoint, %s", checkpoint.name)
    prune_checkpoints(directory, keep)
    trim_log(RunPaths(out).log, state.global_step)
    return checkpoint


def trim_log(path: Path, step: int) -> None:
    """Drop the records of steps the resumed run will redo (after the checkpoint's step)."""
    if not path.is_file():
        return
    kept = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            record = json.loads(line)
        except ValueError:  # a line cut short by a kill: never complete, so never kept
            continue
        if not isinstance(record, dict) or record.get("step", 0) <= step:
            kept.append(line)
    atomic_write_text(path, "".join(line + "\n" for line in kept))


def resume_command(recipe_path: Path, overrides: list[str], progress: bool, processes: int) -> str:
    """The command that continues this run: the recipe and overrides as given, plus --resume."""
    words = ["finetune", "run", str(recipe_path), *overrides, "--resume"]
    if not progress:
        words.append("--no-progress")
    launcher = f"accelerate launch --num_processes {processes} -m " if processes > 1 else ""
    return launcher + shlex.join(words)


def stopped_message(stopped: TrainingStopped, command: str) -> str:
    """One line: why it stopped, where the checkpoint is, and the command that continues."""
    where = f"checkpoint {stopped.checkpoint}" if stopped.checkpoint else "no checkpoint dir"
    return (
        f"{stopped.signal_name}: stopped after step {stopped.step} of {stopped.total}, "
        f"{where}; resume with: {command}"
    )
