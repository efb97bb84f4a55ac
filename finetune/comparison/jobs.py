"""Running several points of a comparison at once (`--jobs N`), each in its own process.

A job slot is a share of the machine: on a machine with GPUs, slot k sees one GPU
(`CUDA_VISIBLE_DEVICES`), so N jobs use N GPUs; on a CPU the cores are split among the slots
(`OMP_NUM_THREADS` and friends, read by torch at start), so two jobs on two cores do not fight
over both. Points are handed to free slots in order; every start and end is one log line
naming the job, so a long comparison shows what runs where. Results do not depend on the slot:
each point is one `finetune run` of its own recipe and seed.
"""

from __future__ import annotations

import logging
import os
import queue
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TypeVar

log = logging.getLogger(__name__)

P = TypeVar("P")
R = TypeVar("R")

THREAD_VARIABLES = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")


@dataclass(frozen=True)
class Slot:
    """One job's share of the machine, as environment variables for its process."""

    index: int
    env: dict[str, str]

    def describe(self) -> str:
        if "CUDA_VISIBLE_DEVICES" in self.env:
            return f"GPU {self.env['CUDA_VISIBLE_DEVICES']}"
        return f"{self.env.get('OMP_NUM_THREADS', '?')} thread(s)"


def cpu_cores() -> int:
    """CPUs this process may use (a container's share, not the host's count)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - macOS
        return os.cpu_count() or 1


def gpu_count() -> int:
    """GPUs visible to this process, without importing torch (the parent only schedules)."""
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None:
        return len([d for d in visible.split(",") if d.strip() and d.strip() != "-1"])
    try:
        import torch

        return torch.cuda.device_count() if torch.cuda.is_available() else 0
    except ImportError:  # pragma: no cover - torch is a dependency
        return 0


def slots(jobs: int, gpus: int | None = None, cores: int | None = None) -> list[Slot]:
    """`jobs` slots: one GPU each when there are GPUs (round robin when fewer GPUs than jobs),
    else an equal share of the CPU cores (at least one thread each)."""
    gpus = gpu_count() if gpus is None else gpus
    if gpus > 0:
        visible = os.environ.get("CUDA_VISIBLE_DEVICES")
        ids = [d.strip() for d in visible.split(",")] if visible else [str(i) for i in range(gpus)]
        return [Slot(k, {"CUDA_VISIBLE_DEVICES": ids[k % len(ids)]}) for k in range(jobs)]
    threads = max(1, (cpu_cores() if cores is None else cores) // jobs)
    env = {name: str(threads) for name in THREAD_VARIABLES}
    return [Slot(k, dict(env)) for k in range(jobs)]


def run_all(
    points: Sequence[P],
    run: Callable[[P, Slot], R],
    jobs: int,
    name: Callable[[P], str] = str,
) -> list[R]:
    """`run(point, slot)` for every point, `jobs` at a time, results in the points' order.

    With one job the points run one after the other in this thread, on the whole machine
    (no thread limits), exactly as before `--jobs` existed."""
    if jobs <= 1 or len(points) <= 1:
        return [run(point, Slot(0, {})) for point in points]
    free: queue.Queue[Slot] = queue.Queue()
    for slot in slots(min(jobs, len(points))):
        free.put(slot)
    total = len(points)

    def task(index: int, point: P) -> R:
        slot = free.get()
        try:
            log.info("[%d/%d] %s: started (job %d, %s)", index + 1, total, name(point),
                     slot.index + 1, slot.describe())  # fmt: skip
            result = run(point, slot)
            log.info("[%d/%d] %s: done", index + 1, total, name(point))
            return result
        finally:
            free.put(slot)

    pool = ThreadPoolExecutor(max_workers=min(jobs, total))
    futures = [pool.submit(task, i, point) for i, point in enumerate(points)]
    try:
        return [future.result() for future in futures]
    except BaseException:  # Ctrl-C: the queued points must not start; running ones checkpoint
        pool.shutdown(wait=True, cancel_futures=True)
        raise
    finally:
        pool.shutdown(wait=True)
