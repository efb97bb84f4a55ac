"""Hugging Face tokens masked wherever text may reach a person: messages, logs, run files.

Tokens can reach text through URLs, exceptions from huggingface_hub or a user pasting one into
a recipe. This module is a leaf (standard library only), so errors, logs and run files can all
use it without importing each other.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

TOKEN_ENV_VARS = ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN", "HUGGINGFACE_TOKEN", "HF_API_TOKEN")
TOKEN_PATTERN = re.compile(r"(?<![A-Za-z0-9])hf_[A-Za-z0-9]{16,}")
REDACTED = "hf_***"


def _stored_token() -> str:
    """The token `huggingface-cli login` saved: it reaches messages as easily as HF_TOKEN."""
    default = Path(os.environ.get("HF_HOME", Path.home() / ".cache" / "huggingface")) / "token"
    path = Path(os.environ.get("HF_TOKEN_PATH", default))
    try:
        return path.read_text(encoding="utf-8").strip() if path.is_file() else ""
    except (OSError, UnicodeDecodeError):
        return ""


def secret_values() -> list[str]:
    """Token values to mask wherever they appear, even when not shaped like hf_...."""
    values = [os.environ.get(name, "") for name in TOKEN_ENV_VARS] + [_stored_token()]
    return [v.strip() for v in values if len(v.strip()) >= 8]


def redact(text: str) -> str:
    """Replace any Hugging Face token (from the environment or hf_... shaped) with a mask."""
    for value in secret_values():
        text = text.replace(value, REDACTED)
    return TOKEN_PATTERN.sub(REDACTED, text)
