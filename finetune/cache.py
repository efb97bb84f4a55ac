"""Where finetune keeps what it can make again: one root for every cache.

`FINETUNE_CACHE_DIR`, default `~/.cache/finetune`. The feature cache lives in `features/`
(data/encoding.py), bundled models converted on first use in `models/` (models/bundled.py).
"""

from __future__ import annotations

import os
from pathlib import Path


def cache_home() -> Path:
    """The root of finetune's caches, read from the environment on every call (tests and
    users may point it elsewhere per process)."""
    return Path(os.environ.get("FINETUNE_CACHE_DIR") or Path.home() / ".cache" / "finetune")
