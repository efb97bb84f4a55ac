"""Random state that training owns alone.

Dropout draws from the global generators (Python, NumPy, torch on the CPU and on the
accelerator). Anything else that draws from them between two optimizer steps (an evaluation,
a data loader starting its iterator) shifts every later dropout mask, so a run evaluated at
other steps, or resumed at another point, would train differently. Evaluation therefore runs
inside `isolated_rng`, and the training data loader gets its own generator: the training
stream depends only on the seed and the steps taken, and a checkpoint's saved RNG state is
exactly the state at its step boundary.
"""

from __future__ import annotations

import contextlib
import random
from collections.abc import Iterator
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # pragma: no cover
    import torch


@contextlib.contextmanager
def isolated_rng(device: torch.device) -> Iterator[None]:
    """Run the block on a copy of every global generator; restore them all afterwards."""
    import numpy as np
    import torch

    python_state, numpy_state = random.getstate(), np.random.get_state()
    kind = getattr(device, "type", "cpu")
    devices = [device] if kind not in ("cpu", "meta") else []
    try:
        with torch.random.fork_rng(devices=devices, device_type=kind if devices else "cuda"):
            yield
    finally:
        random.setstate(python_state)
        np.random.set_state(numpy_state)


def private_generator(seed: int) -> torch.Generator:
    """A generator for a DataLoader, so that starting its iterator (which draws a base seed for
    worker processes) takes nothing from the global stream dropout uses."""
    import torch

    return torch.Generator().manual_seed(seed)
