"""Claiming a run directory for one training run on every process.

The main process checks and locks the directory (refusing a finished run, a run in use, a
changed `--resume`) and picks the checkpoint to resume from, before any weight loads; every
process then learns the main process's decision, so a refusal ends every rank with the same
message and no rank is left waiting at a barrier.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

from finetune.errors import FinetuneError, RunDirError
from finetune.run.files import RunLock, claim_run_dir, clear_run

if TYPE_CHECKING:  # pragma: no cover
    from finetune.types import Accelerator

T = TypeVar("T")


@contextmanager
def claimed(
    out: Path,
    accelerator: Accelerator,
    overwrite: bool,
    resume: bool,
    decide: Callable[[], T],
) -> Iterator[T]:
    """Hold `out` for the block. The main process claims it (clearing it for `--overwrite`) and
    calls `decide` under the lock (what to resume from); the block sees its answer on every
    process, and the lock is released however the block ends."""
    lock = RunLock(out)
    refused: Exception | None = None
    decided: T | None = None
    if accelerator.is_main_process:
        try:
            lock = claim_run_dir(out, overwrite, resume)  # check, lock, re-check under the lock
            if overwrite and not resume:
                clear_run(out)
            decided = decide()
        except Exception as exc:  # shared below, then re-raised as it was on the main rank
            refused = exc
    refused = share_refusal(accelerator, refused)
    if refused is not None:
        if accelerator.is_main_process:
            lock.release()
        raise refused
    try:
        value = from_main(accelerator, decided)
        if value is None:  # pragma: no cover - the main process either decided or raised
            raise RunDirError("the main process decided nothing", fix="this is a bug")
        yield value
    finally:
        if accelerator.is_main_process:
            lock.release()


def share_refusal(accelerator: Accelerator, error: Exception | None) -> Exception | None:
    """The main rank's error (or None) on every rank: a FinetuneError is rebuilt from its
    class, message and fix (the same message and exit code everywhere), anything else becomes
    a RunDirError naming it; no rank is left waiting at a barrier."""
    if accelerator.num_processes == 1:
        return error
    from accelerate.utils import broadcast_object_list

    # (class, message, fix) of the main rank's error, or None: what every rank rebuilds
    payload: list[tuple[type[FinetuneError], str, str] | None] = [None]
    if isinstance(error, FinetuneError):
        payload = [(type(error), error.message, error.fix)]
    elif error is not None:
        payload = [(RunDirError, f"main process failed: {type(error).__name__}: {error}", "")]
    broadcast_object_list(payload, from_process=0)
    shared = payload[0]
    if shared is None:
        return None
    if error is not None:
        return error
    cls, message, fix = shared
    return cls(message, fix=fix)


def from_main(accelerator: Accelerator, value: T | None) -> T | None:
    """The main process's value on every process."""
    if accelerator.num_processes == 1:
        return value
    from accelerate.utils import broadcast_object_list

    payload = [value]
    broadcast_object_list(payload, from_process=0)
    return payload[0]
