"""Hand the host memory a training step freed back to the OS (glibc's `malloc_trim`).

On CPU every tensor comes from glibc's malloc, and glibc keeps what a step frees for later
steps: after one long batch the process stays at that batch's size, and freed chunks of
varying sizes are only partly reused by the next batch of another length (SmolLM2-135M,
DialogSum, batch 8: 3.3 GB resident after a 230-token batch, then 7.6 GB at the next 448-token
batch, where the tensors it kept for backward were 3.5 GB; benchmarks/decoder_memory.py).
`malloc_trim(0)` after an optimizer step returns every free page, so the next step starts from
the model's own footprint. It is not free: about 40 ms a call on the quick start (pages a later
step touches are faulted back in), which after every 130 ms step cost a quarter of the
throughput (188 vs 242 samples/s; benchmarks/train_throughput.py). So it runs after a step only
when `MIN_INTERVAL_S` have passed since the last one, and only when the process holds at least
`GROWTH_BYTES` more than right after the last trim: every step of a decoder's multi-second,
gigabyte steps; once in 120 quick-start steps instead of 18 times, since its step keeps only
0.1-0.5 GB, which the next step reuses (each of those trims handed back pages the next step
faulted in again: about 2% of an fp32 step's time, within the noise of interleaved runs).
Elsewhere (macOS, musl) there is nothing to call.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable

MIN_INTERVAL_S = 2.0  # at most ~2% of the wall time spent trimming
GROWTH_BYTES = 1 << 30  # what a step may keep for the next before it is handed back
_last_trim = [0.0]
_resident_after_trim = [0]  # bytes; 0 before the first trim


@functools.cache
def _malloc_trim() -> Callable[[int], int] | None:
    import ctypes
    import ctypes.util

    try:
        trim = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").malloc_trim
    except (OSError, AttributeError):  # not glibc: nothing to call
        return None
    trim.argtypes, trim.restype = [ctypes.c_size_t], ctypes.c_int
    return trim


def return_freed_memory(device: object) -> None:  # a torch.device, or its name
    """After a step on the CPU: give glibc's free pages back to the OS."""
    if getattr(device, "type", str(device)) != "cpu":
        return
    now = time.monotonic()
    if now - _last_trim[0] < MIN_INTERVAL_S:
        return
    resident = resident_bytes()
    if resident is not None and resident - _resident_after_trim[0] < GROWTH_BYTES:
        return
    trim = _malloc_trim()
    if trim is not None:
        trim(0)
        _resident_after_trim[0] = resident_bytes() or 0
    _last_trim[0] = time.monotonic()


def resident_bytes() -> int | None:
    """The process's resident set now (Linux's /proc; None elsewhere, where trimming then
    falls back to the interval alone)."""
    try:
        with open("/proc/self/statm", "rb") as handle:
            return int(handle.read().split()[1]) * _page_size()
    except (OSError, IndexError, ValueError):
        return None


@functools.cache
def _page_size() -> int:
    import os

    return os.sysconf("SC_PAGE_SIZE")
