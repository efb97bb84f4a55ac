"""Stopping at an optimizer-step boundary on SIGTERM (preemption) or Ctrl-C (SIGINT).

The first signal only records itself: the loop finishes the optimizer step in progress, every
process learns of the request through one small collective per step (so all of them stop after
the same step, even when only one was signalled), all of them join the checkpoint write, and
the loop raises `TrainingStopped`. A second signal quits at once (KeyboardInterrupt, exit 130,
for Ctrl-C; exit 143 for SIGTERM); a checkpoint being written then is never renamed into
place, so the last complete checkpoint is the one `--resume` finds.
"""

from __future__ import annotations

import contextlib
import logging
import signal
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Union

if TYPE_CHECKING:  # pragma: no cover
    from torch.distributed import ProcessGroup

    from finetune.types import Accelerator

# what signal.signal takes and returns: a function, SIG_DFL / SIG_IGN, or None (set from C)
Handler = Union[Callable[[int, Union[FrameType, None]], object], int, signal.Handlers, None]

log = logging.getLogger(__name__)

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


class TrainingStopped(Exception):
    """Raised by the loop after the stop checkpoint is written (every process raises it)."""

    def __init__(self, signal_name: str, step: int, total: int, checkpoint: Path | None) -> None:
        super().__init__(f"{signal_name}: stopped after step {step} of {total}")
        self.signal_name = signal_name
        self.step = step
        self.total = total
        self.checkpoint = checkpoint


class StopRequest:
    """The first stop signal received (if any), with the handlers that record it."""

    def __init__(self) -> None:
        self.signum: int = 0
        self._previous: dict[int, Handler] = {}
        self._group: ProcessGroup | None = None  # the gloo group of `agreed`, made on first use

    def install(self) -> None:
        """Python only lets the main thread set handlers; elsewhere the defaults stay."""
        if threading.current_thread() is not threading.main_thread():
            return
        for sig in STOP_SIGNALS:
            self._previous[sig] = signal.signal(sig, self._handle)

    def uninstall(self) -> None:
        for sig, previous in self._previous.items():
            signal.signal(sig, previous)
        self._previous = {}

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if self.signum:
            self.uninstall()
            if signum == signal.SIGINT:
                raise KeyboardInterrupt
            raise SystemExit(128 + signum)
        self.signum = signum
        log.warning(
            "%s received: finishing this optimizer step, then saving a checkpoint "
            "(send it again to quit at once, keeping the last complete checkpoint)",
            signal.Signals(signum).name,
        )

    def agreed(self, accelerator: Accelerator) -> str | None:
        """The stop signal's name once any process has one, on every process; else None.

        Asked after every step, so on several processes it is a collective on a CPU tensor
        over its own gloo group: a GPU tensor would make every step wait for the GPU to drain
        (the loop otherwise reads the device only at log steps)."""
        signum = self.signum
        if accelerator.num_processes > 1:
            import torch
            import torch.distributed as dist

            if self._group is None:  # every rank gets here at its first step
                self._group = dist.new_group(backend="gloo")
            mine = torch.tensor([signum], dtype=torch.int64)
            dist.all_reduce(mine, op=dist.ReduceOp.MAX, group=self._group)
            signum = int(mine.item())
        return signal.Signals(signum).name if signum else None


@contextlib.contextmanager
def stop_on_signals() -> Iterator[StopRequest]:
    """SIGTERM and SIGINT handlers for the duration of the block, the previous ones after."""
    request = StopRequest()
    request.install()
    try:
        yield request
    finally:
        request.uninstall()
