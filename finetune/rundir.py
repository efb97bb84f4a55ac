"""The run directory: never overwritten by accident, locked while written, written atomically.

A run directory is *finished* once `metrics.json` and the `.finished` marker exist. Starting a
run on a finished directory is refused without `--overwrite`; on a directory another process is
writing (an flock on `.lock`) it is refused always. Every artefact is written to a temporary
sibling and renamed into place, so a crash or a full disk leaves the previous version intact.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import socket
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from finetune.errors import CheckpointError, RunDirError

FINISHED = ".finished"
LOCK = ".lock"
RUN_MARKERS = ("recipe.yaml", "log.jsonl", "checkpoints", LOCK, FINISHED)


def is_finished(path: Path) -> bool:
    return (path / FINISHED).exists()


def has_checkpoint(path: Path) -> bool:
    ckpt = path / "checkpoints"
    return ckpt.is_dir() and any(p.name.startswith("step-") for p in ckpt.iterdir())


class RunLock:
    """An advisory lock (flock) held for the whole run; released by the OS if the process dies."""

    def __init__(self, path: Path) -> None:
        self.path = path / LOCK
        self.handle: Any = None

    def acquire(self) -> None:
        import fcntl

        self.path.parent.mkdir(parents=True, exist_ok=True)
        handle = open(self.path, "a+")  # noqa: SIM115 - held open for the run's lifetime
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            handle.seek(0)
            owner = handle.read().strip() or "another process"
            handle.close()
            raise RunDirError(
                f"{self.path.parent}: another run is writing here ({owner})",
                fix="wait for it to finish, or set output.dir=runs/<another name>",
            ) from None
        handle.seek(0)
        handle.truncate()
        handle.write(f"pid {os.getpid()} on {socket.gethostname()}\n")
        handle.flush()
        self.handle = handle

    def release(self) -> None:
        if self.handle is not None:
            self.handle.close()
            self.handle = None
            with contextlib.suppress(OSError):
                self.path.unlink()


def check_can_start(path: Path, overwrite: bool, resume: bool) -> None:
    """Refuse to clobber finished or foreign directories; explain the flags that would allow it."""
    if not path.exists():
        return
    if not path.is_dir():
        raise RunDirError(f"{path}: exists and is not a directory", fix="set output.dir elsewhere")
    entries = [p.name for p in path.iterdir()]
    if not entries:
        return
    if overwrite:
        if not any(name in RUN_MARKERS for name in entries):
            raise RunDirError(
                f"{path}: is not a finetune run directory ({len(entries)} other files); "
                "--overwrite only replaces run directories",
                fix="choose an empty or new output.dir",
            )
        return
    if is_finished(path):
        raise RunDirError(
            f"{path}: holds a finished run; refusing to overwrite it",
            fix="pass --overwrite to replace it, or set output.dir=runs/<new name>",
        )
    if resume and has_checkpoint(path):
        return
    if has_checkpoint(path):
        raise RunDirError(
            f"{path}: holds an unfinished run with checkpoints",
            fix="pass --resume to continue it, --overwrite to start again, or another output.dir",
        )
    if not any(name in RUN_MARKERS for name in entries):
        raise RunDirError(
            f"{path}: is not empty and not a run directory",
            fix="choose an empty or new output.dir",
        )


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


def _write_failure(path: Path, exc: OSError) -> CheckpointError:
    reason = exc.strerror or str(exc)
    return CheckpointError(
        f"could not write {path}: {reason}; the previous version (if any) is intact",
        fix="free disk space or fix permissions, then rerun with --resume",
    )


def atomic_write_text(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    except OSError as exc:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise _write_failure(path, exc) from None


def atomic_write_json(path: Path, data: Any) -> None:
    atomic_write_text(path, json.dumps(data, indent=2, sort_keys=False) + "\n")


@contextlib.contextmanager
def atomic_dir(dest: Path) -> Iterator[Path]:
    """Yield a temporary directory that replaces `dest` only if the block succeeds."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{dest.name}.tmp-", dir=dest.parent))
    os.chmod(tmp, 0o777 & ~_umask())
    try:
        yield tmp
        old = dest.with_name(f".{dest.name}.old")
        if dest.exists():
            if old.exists():
                shutil.rmtree(old)
            os.replace(dest, old)
        os.replace(tmp, dest)
        if old.exists():
            shutil.rmtree(old, ignore_errors=True)
    except OSError as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        raise _write_failure(dest, exc) from None
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def append_jsonl(path: Path, record: dict[str, Any]) -> None:
    try:
        with path.open("a", encoding="utf-8") as handle:
            handle.write(json.dumps(record) + "\n")
    except OSError as exc:
        raise _write_failure(path, exc) from None
