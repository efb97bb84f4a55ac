"""The rich progress bar of a run, shown by the main process only."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:  # pragma: no cover
    from finetune.types import Accelerator


class Progress:
    """rich progress bar on the main process: loss, lr, samples/s, ETA."""

    def __init__(self, accelerator: Accelerator, total: int, enabled: bool = True) -> None:
        self.bar = None
        if not (enabled and accelerator.is_main_process):
            return
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            TextColumn,
            TimeElapsedColumn,
            TimeRemainingColumn,
        )
        from rich.progress import Progress as RichProgress

        from finetune.console import err_console

        self.bar = RichProgress(
            TextColumn("[bold]train"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[info]}"),
            TimeElapsedColumn(),
            TextColumn("ETA"),
            TimeRemainingColumn(),
            console=err_console(),
            transient=False,
        )
        self.task = self.bar.add_task("train", total=total, info="")
        self.bar.start()

    def update(self, step: int, info: str) -> None:
        if self.bar is not None:
            self.bar.update(self.task, completed=step, info=info)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.stop()
