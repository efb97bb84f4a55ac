"""What a run reports about the machine it trained on: peak memory and the effective batch.

`peak_memory_bytes` is comparable across runs on one kind of machine (GPU: the allocator's peak
of live tensors, which is what LoRA vs full fine-tuning changes; CPU: the process's peak RSS).
On CUDA the allocated and reserved peaks are reported separately: reserved is what
`nvidia-smi` shows and what an out-of-memory error hits, allocated is what the model needed.
"""

from __future__ import annotations

import resource
import sys
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # pragma: no cover
    from finetune.types import Accelerator


def peak_memory_bytes() -> int:
    """Peak GPU memory allocated on a GPU, else this process's peak resident set size."""
    import torch

    if torch.cuda.is_available():
        return int(torch.cuda.max_memory_allocated())
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(peak if sys.platform == "darwin" else peak * 1024)


def device_metrics(
    accelerator: Accelerator, batch_size: int, grad_accum: int
) -> dict[str, int | str]:
    """metrics.json's machine keys: the effective batch everywhere, GPU peaks on CUDA."""
    import torch

    metrics: dict[str, int | str] = {
        "peak_memory_bytes": peak_memory_bytes(),
        "effective_batch": batch_size * accelerator.num_processes * grad_accum,
        "num_processes": accelerator.num_processes,
        "mixed_precision": str(accelerator.mixed_precision),
        "distributed_type": str(getattr(accelerator.distributed_type, "value", "NO")),
    }
    if torch.cuda.is_available():
        metrics["peak_gpu_allocated_bytes"] = int(torch.cuda.max_memory_allocated())
        metrics["peak_gpu_reserved_bytes"] = int(torch.cuda.max_memory_reserved())
    return metrics
