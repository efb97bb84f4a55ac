"""One rich console each for stdout (results) and stderr (logs, progress, errors)."""

from __future__ import annotations

import functools
from typing import Any


@functools.cache
def out_console() -> Any:
    from rich.console import Console

    return Console(soft_wrap=True)


@functools.cache
def err_console() -> Any:
    from rich.console import Console

    return Console(stderr=True, soft_wrap=True)
