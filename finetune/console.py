"""One rich console each for stdout (results) and stderr (logs, progress, errors), and the one
rule for showing metric values on them."""

from __future__ import annotations

import functools
from collections.abc import Mapping
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # pragma: no cover
    from rich.console import Console

    from finetune.types import JSON


@functools.cache
def out_console() -> Console:
    from rich.console import Console

    return Console(soft_wrap=True)


@functools.cache
def err_console() -> Console:
    from rich.console import Console

    return Console(stderr=True, soft_wrap=True)


def metric_items(metrics: Mapping[str, JSON]) -> list[tuple[str, str]]:
    """(key, shown value) for the scalar entries of a metrics dict: floats to 4 decimals.

    The one formatting rule for the console summary, the log lines and the model card, so the
    three never show the same run differently.
    """
    items = []
    for key, value in metrics.items():
        if isinstance(value, bool) or value is None:
            continue
        if isinstance(value, float):
            items.append((key, f"{value:.4f}"))
        elif isinstance(value, (int, str)):
            items.append((key, str(value)))
    return items


def escape(text: str) -> str:
    from rich.markup import escape

    return escape(text)


def print_err(message: str) -> None:
    err_console().print(message, highlight=False)


def print_out(message: str) -> None:
    out_console().print(message, highlight=False)


def print_metrics(metrics: Mapping[str, JSON]) -> None:
    for key, shown in metric_items(metrics):
        print_out(f"  {key}: {shown}")
