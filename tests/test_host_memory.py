"""Freed host memory goes back to the OS after a CPU step, at most once per MIN_INTERVAL_S and
only once the process has grown by GROWTH_BYTES since the last trim (each malloc_trim call
costs tens of milliseconds plus the page faults of the next step: after every short step it
cost a quarter of the quick start's throughput; most of them handed back pages the next step
reuses)."""

from __future__ import annotations

import pytest

from finetune.train import host_memory

GIB = 1 << 30


@pytest.fixture
def trims(monkeypatch):
    """The trim calls made, a settable clock and a settable resident size."""
    calls: list[int] = []
    state = {"clock": 1000.0, "resident": 0}
    monkeypatch.setattr(host_memory, "_malloc_trim", lambda: calls.append)
    monkeypatch.setattr(host_memory.time, "monotonic", lambda: state["clock"])
    monkeypatch.setattr(host_memory, "resident_bytes", lambda: state["resident"])
    monkeypatch.setattr(host_memory, "_last_trim", [0.0])
    monkeypatch.setattr(host_memory, "_resident_after_trim", [0])
    return calls, state


def test_trim_runs_on_cpu_at_most_once_per_interval(trims):
    calls, state = trims
    state["resident"] = 10 * GIB  # always far above the last trim: only the clock decides
    host_memory.return_freed_memory("cpu")
    assert calls == [0]  # the first step trims
    host_memory._resident_after_trim[0] = 0
    state["clock"] += host_memory.MIN_INTERVAL_S / 2
    host_memory.return_freed_memory("cpu")
    assert calls == [0]  # too soon: skipped
    state["clock"] += host_memory.MIN_INTERVAL_S
    host_memory.return_freed_memory("cpu")
    assert calls == [0, 0]  # the interval passed: trims again
    state["clock"] += 10 * host_memory.MIN_INTERVAL_S
    host_memory.return_freed_memory("cuda")
    assert calls == [0, 0]  # never on a GPU


def test_trim_waits_until_the_process_grew_by_growth_bytes(trims):
    calls, state = trims
    state["resident"] = 700 << 20  # a quick-start step: 0.7 GB in all
    host_memory.return_freed_memory("cpu")
    assert calls == []  # little to hand back: the next step reuses it
    state["resident"] = 3 * GIB  # a decoder's step kept gigabytes
    host_memory.return_freed_memory("cpu")
    assert calls == [0] and host_memory._resident_after_trim[0] == 3 * GIB
    state["clock"] += 2 * host_memory.MIN_INTERVAL_S
    state["resident"] = 3 * GIB + (GIB // 2)  # grew half the allowance since that trim
    host_memory.return_freed_memory("cpu")
    assert calls == [0]
    state["clock"] += 2 * host_memory.MIN_INTERVAL_S
    state["resident"] = 4 * GIB + 1
    host_memory.return_freed_memory("cpu")
    assert calls == [0, 0]


def test_resident_bytes_reads_this_process():
    resident = host_memory.resident_bytes()
    assert resident is None or 1 << 20 < resident < 1 << 40
