"""Which mixed precision a run uses: one rule for `run`, `eval`, `predict` and the benchmarks.

`train.precision: auto` picks bf16 where the hardware computes it natively (GPUs with bf16;
CPUs with AVX512-BF16 or AMX, read at run time: about 1.4x the fp32 training speed there at
the same SST-2 accuracy, issue #12) and fp32 elsewhere, where bf16 would be emulated and many
times slower. Never fp16 on its own (fp16 needs loss scaling and overflows on long
activations), and a warning for fp16 on an architecture the table flags `fp16_overflows` (T5,
whose feed-forward activations overflow the fp16 range and turn the loss into NaN,
transformers#10830, #14189). The rule is a pure function of the hardware facts so a test can
check every branch without the hardware; `train.precision=fp32` gives bit-for-bit the same
numbers on every CPU.
"""

from __future__ import annotations

import functools
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from finetune.errors import FinetuneError

if TYPE_CHECKING:  # pragma: no cover
    from finetune.models.architecture import Architecture

log = logging.getLogger(__name__)

# what accelerate's `mixed_precision` argument calls each recipe value
ACCELERATE_NAMES = {"fp32": "no", "bf16": "bf16", "fp16": "fp16"}
FP16_OVERFLOWS = (
    "train.precision=fp16 on {display}: its activations overflow fp16 and the loss becomes "
    "NaN; use bf16 (or fp32)"
)


@dataclass(frozen=True)
class Hardware:
    """The facts the rule reads; `detect()` fills them from this machine."""

    cuda: bool = False
    gpu_bf16: bool = False
    cpu_bf16: bool = False

    @classmethod
    def detect(cls) -> Hardware:
        import torch

        cuda = torch.cuda.is_available()
        override = os.environ.get("FINETUNE_CPU_BF16")  # 0/1: containers whose cpuinfo lies,
        cpu_bf16 = override == "1" if override in ("0", "1") else cpu_native_bf16()  # tests
        return cls(
            cuda=cuda, gpu_bf16=bool(cuda and torch.cuda.is_bf16_supported()), cpu_bf16=cpu_bf16
        )


def cpu_native_bf16(cpuinfo: Path = Path("/proc/cpuinfo")) -> bool:
    """Whether this CPU computes bf16 natively (AVX512-BF16 or AMX), not by emulation."""
    try:
        flags = cpuinfo.read_text(errors="replace")
    except OSError:
        flags = ""
    if "avx512_bf16" in flags or "amx_bf16" in flags:
        return True
    try:
        import torch

        return "AMX" in str(torch.backends.cpu.get_cpu_capability()).upper()
    except (ImportError, AttributeError):
        return False


def choose_precision(wanted: str, arch: Architecture | None, hw: Hardware) -> str:
    """The recipe's precision resolved to fp32 / bf16 / fp16 for this architecture (None: not
    known, e.g. a recipe `validate` refused) on this hardware."""
    if wanted == "auto":
        native = hw.gpu_bf16 if hw.cuda else hw.cpu_bf16
        return "bf16" if native else "fp32"
    if wanted == "fp16" and not hw.cuda:
        raise FinetuneError(
            "train.precision=fp16 needs a CUDA GPU", fix="use train.precision=auto, fp32 or bf16"
        )
    if wanted == "fp16" and arch is not None and arch.fp16_overflows:
        log.warning(FP16_OVERFLOWS.format(display=arch.display))
    return wanted


def resolve_precision(wanted: str, arch: Architecture | None, hw: Hardware | None = None) -> str:
    """`choose_precision` on this machine, saying why when auto picked bf16 on a CPU."""
    hw = hw or Hardware.detect()
    chosen = choose_precision(wanted, arch, hw)
    if wanted == "auto" and not hw.cuda and chosen == "bf16":
        _say_cpu_bf16()
    return chosen


@functools.cache
def _say_cpu_bf16() -> None:
    """Once a process: `predict` over several runs resolves the precision once per run."""
    log.info(
        "train.precision auto: bf16, which this CPU computes natively (AVX512-BF16/AMX); "
        "train.precision=fp32 for results identical on every CPU"
    )
