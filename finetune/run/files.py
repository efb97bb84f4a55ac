"""The run directory: never overwritten by accident, locked while written, written atomically.

A run directory is *finished* once `metrics.json` and the `.finished` marker exist. Starting a
run on a finished directory is refused without `--overwrite`; on a directory another process is
writing (an flock on `.lock`) it is refused always. Every artefact is written to a temporary
sibling and renamed into place, so a crash or a full disk leaves the previous version intact.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import shutil
import socket
import tempfile
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, TextIO

from finetune.errors import CheckpointError, RunDirError, RunFinishedError, RunLockedError
from finetune.redaction import redact
from finetune.run.layout import LOCK, RUN_MARKERS, RunPaths

if TYPE_CHECKING:  # pragma: no cover
    from finetune.types import JSON


def is_finished(path: Path) -> bool:
    return RunPaths(path).finished.exists()


def has_training_state(path: Path) -> bool:
    """Anything under checkpoints/: an interrupted run that `--resume` may continue.

    Deliberately broader than a *complete* checkpoint (`layout.complete_checkpoints`, what resume
    loads): a run stopped during its first checkpoint write is still somebody's unfinished run.
    """
    ckpt = RunPaths(path).checkpoints
    return ckpt.is_dir() and any(ckpt.iterdir())


class RunLock:
    """An advisory lock (flock) held for the whole run; released by the OS if the process dies."""

    def __init__(self, path: Path) -> None:
        self.path = path / LOCK
        self.handle: TextIO | None = None

    def acquire(self) -> None:
        """Lock `.lock`, retrying if a finishing run unlinked the file we opened (inode check)."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        for _ in range(5):
            handle = self._try_lock()
            if _same_file(handle, self.path):
                break
            handle.close()  # we locked an unlinked file: the next run would lock a new one
        else:  # pragma: no cover - needs five lost races in a row
            raise self._locked("another process")
        handle.seek(0)
        handle.truncate()
        handle.write(f"pid {os.getpid()} on {socket.gethostname()}\n")
        handle.flush()
        self.handle = handle

    def _try_lock(self) -> TextIO:
        import fcntl

        handle = open(self.path, "a+")  # noqa: SIM115 - held open for the run's lifetime
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            handle.seek(0)
            owner = handle.read().strip() or "another process"
            handle.close()
            raise self._locked(owner) from None
        return handle

    def _locked(self, owner: str) -> RunLockedError:
        return RunLockedError(
            f"{self.path.parent}: another run is writing here ({owner})",
            fix="wait for it to finish, or set output.dir=runs/<another name>",
        )

    def release(self) -> None:
        """Unlink while still holding the lock, so no waiting process locks a dead file."""
        if self.handle is not None:
            with contextlib.suppress(OSError):
                self.path.unlink()
            self.handle.close()
            self.handle = None


def _same_file(handle: TextIO, path: Path) -> bool:
    try:
        return os.fstat(handle.fileno()).st_ino == os.stat(path).st_ino
    except OSError:
        return False


def check_can_start(path: Path, overwrite: bool, resume: bool) -> None:
    """Refuse to clobber finished or foreign directories; explain the flags that would allow it."""
    if not path.exists():
        return
    if not path.is_dir():
        raise RunDirError(f"{path}: exists and is not a directory", fix="set output.dir elsewhere")
    entries = [p.name for p in path.iterdir() if p.name != LOCK]
    if not entries:
        return
    is_run = any(name in RUN_MARKERS for name in entries)
    if overwrite:
        if not is_run:
            raise RunDirError(
                f"{path}: is not a finetune run directory ({len(entries)} other files); "
                "--overwrite only replaces run directories",
                fix="choose an empty or new output.dir",
            )
        return
    if is_finished(path) and resume:
        raise RunFinishedError(
            f"{path}: holds a finished run; there is nothing to resume",
            fix="its results are there (`finetune eval` recomputes them); pass --overwrite to "
            "train it again, or set output.dir=runs/<new name>",
        )
    if is_finished(path):
        raise RunFinishedError(
            f"{path}: holds a finished run; refusing to overwrite it",
            fix="pass --overwrite to replace it, or set output.dir=runs/<new name>",
        )
    if has_training_state(path):
        if resume:
            return
        raise RunFinishedError(
            f"{path}: holds an unfinished run with checkpoints",
            fix="pass --resume to continue it, --overwrite to start again, or another output.dir",
        )
    if not is_run:
        raise RunDirError(
            f"{path}: is not empty and not a run directory",
            fix="choose an empty or new output.dir",
        )


def claim_run_dir(path: Path, overwrite: bool, resume: bool) -> RunLock:
    """Check, lock, and check again under the lock.

    The first check gives its clear message without creating anything; the second closes the
    race where another run finished this directory between our check and our lock.
    """
    check_can_start(path, overwrite, resume)
    lock = RunLock(path)
    lock.acquire()
    try:
        check_can_start(path, overwrite, resume)
    except BaseException:
        lock.release()
        raise
    return lock


def clear_run(path: Path) -> None:
    """Remove a previous run's contents (not the lock we hold)."""
    for child in path.iterdir():
        if child.name == LOCK:
            continue
        if child.is_dir():
            shutil.rmtree(child)
        else:
            child.unlink()


# --------------------------------------------------------------------------- atomic writes


def _umask() -> int:
    current = os.umask(0)
    os.umask(current)
    return current


WRITE_ERRNOS = (errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM, errno.EIO)
WRITE_FAILURE_TEXT = ("no space left", "file write failed", "disk quota", "read-only file system")


def is_write_failure(exc: BaseException) -> bool:
    """OSErrors, and the RuntimeErrors torch/safetensors raise when the disk fills up."""
    if isinstance(exc, OSError):
        return True
    if getattr(exc, "errno", None) in WRITE_ERRNOS:
        return True
    text = str(exc).lower()
    return any(marker in text for marker in WRITE_FAILURE_TEXT)


def _write_failure(path: Path, exc: BaseException) -> CheckpointError:
    lines = str(exc).strip().splitlines()
    reason = getattr(exc, "strerror", None) or (lines[0] if lines else type(exc).__name__)
    return CheckpointError(
        f"could not write {path}: {reason}; the previous version (if any) is intact",
        fix="free disk space or fix permissions, then rerun with --resume",
    )


def atomic_write_text(path: Path, text: str) -> None:
    """Write beside, fsync, rename; redacted, because every run artefact passes through here."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(redact(text))
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    except OSError as exc:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise _write_failure(path, exc) from None


def atomic_write_json(path: Path, data: JSON) -> None:
    atomic_write_text(path, json.dumps(data, indent=2, sort_keys=False) + "\n")


@contextlib.contextmanager
def atomic_dir(dest: Path) -> Iterator[Path]:
    """Yield a temporary directory that replaces `dest` only if the block succeeds.

    On any failure the temporary directory is removed and `dest` (if it existed) is left as it
    was; write failures (disk full, permissions) become a CheckpointError naming `dest`.
    """
    try:
        dest.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{dest.name}.tmp-", dir=dest.parent))
        os.chmod(tmp, 0o777 & ~_umask())
    except OSError as exc:
        raise _write_failure(dest, exc) from None
    try:
        yield tmp
        _swap_into_place(tmp, dest)
    except BaseException as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        wrap = isinstance(exc, Exception) and not isinstance(exc, CheckpointError)
        if wrap and is_write_failure(exc):
            raise _write_failure(dest, exc) from None
        raise


def _swap_into_place(tmp: Path, dest: Path) -> None:
    """Rename tmp to dest; an existing dest is parked as .old and put back if the rename fails."""
    old = dest.with_name(f".{dest.name}.old")
    if old.exists():
        shutil.rmtree(old)
    had_dest = dest.exists()
    if had_dest:
        os.replace(dest, old)
    try:
        os.replace(tmp, dest)
    except OSError:
        if had_dest:
            os.replace(old, dest)
        raise
    if had_dest:
        shutil.rmtree(old, ignore_errors=True)


def file_sha256(path: Path, chunk: int = 1 << 20) -> str:
    """Streamed: checkpoints and training data can be far larger than memory."""
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(chunk), b""):
            digest.update(block)
    return digest.hexdigest()


def append_jsonl(path: Path, record: Mapping[str, JSON]) -> None:
    """One JSON line, redacted (records can quote recipe values)."""
    try:
        with path.open("a", encoding="utf-8") as handle:
            handle.write(redact(json.dumps(record)) + "\n")
    except OSError as exc:
        raise _write_failure(path, exc) from None
