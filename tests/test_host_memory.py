"""Freed host memory goes back to the OS after a CPU step, at most once per MIN_INTERVAL_S
(each malloc_trim call costs tens of milliseconds: after every short step it cost a quarter of
the quick start's throughput)."""

from __future__ import annotations

from finetune.train import host_memory


def test_trim_runs_on_cpu_at_most_once_per_interval(monkeypatch):
    calls: list[int] = []
    clock = [1000.0]
    monkeypatch.setattr(host_memory, "_malloc_trim", lambda: calls.append)
    monkeypatch.setattr(host_memory.time, "monotonic", lambda: clock[0])
    monkeypatch.setattr(host_memory, "_last_trim", [0.0])
    host_memory.return_freed_memory("cpu")
    assert calls == [0]  # the first step trims
    clock[0] += host_memory.MIN_INTERVAL_S / 2
    host_memory.return_freed_memory("cpu")
    assert calls == [0]  # too soon: skipped
    clock[0] += host_memory.MIN_INTERVAL_S
    host_memory.return_freed_memory("cpu")
    assert calls == [0, 0]  # the interval passed: trims again
    clock[0] += 10 * host_memory.MIN_INTERVAL_S
    host_memory.return_freed_memory("cuda")
    assert calls == [0, 0]  # never on a GPU
