"""Logging through `logging` + rich, with every Hugging Face token redacted.

Tokens can reach messages through URLs, exceptions from huggingface_hub or a user pasting one
into a recipe; the filter below rewrites every record (console and files) so none is ever shown.
"""

from __future__ import annotations

import logging
import os
import re
import sys
import time
from pathlib import Path

TOKEN_ENV_VARS = ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN", "HUGGINGFACE_TOKEN", "HF_API_TOKEN")
TOKEN_PATTERN = re.compile(r"\bhf_[A-Za-z0-9]{16,}\b")
REDACTED = "hf_***"


def secret_values() -> list[str]:
    values = [os.environ.get(name, "") for name in TOKEN_ENV_VARS]
    return [v for v in values if len(v) >= 8]


def redact(text: str) -> str:
    """Replace any Hugging Face token (from the environment or hf_... shaped) with a mask."""
    for value in secret_values():
        text = text.replace(value, REDACTED)
    return TOKEN_PATTERN.sub(REDACTED, text)


class RedactingFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        cleaned = redact(message)
        if cleaned != message or record.args:
            record.msg, record.args = cleaned, None
        if record.exc_text:
            record.exc_text = redact(record.exc_text)
        return True


def crash_log_path() -> Path:
    base = Path(os.environ.get("FINETUNE_LOG_DIR", Path.home() / ".cache" / "finetune" / "logs"))
    return base / f"finetune-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}.log"


def setup_logging(debug: bool = False, quiet: bool = False) -> None:
    from rich.logging import RichHandler

    from finetune.console import err_console

    root = logging.getLogger()
    for handler in list(root.handlers):
        root.removeHandler(handler)
    level = logging.DEBUG if debug else (logging.WARNING if quiet else logging.INFO)
    handler = RichHandler(
        console=err_console(), show_path=debug, show_time=False, rich_tracebacks=debug
    )
    handler.addFilter(RedactingFilter())
    handler.setLevel(level)
    root.addHandler(handler)
    root.setLevel(logging.DEBUG)
    for noisy in (
        "urllib3",
        "filelock",
        "fsspec",
        "httpx",
        "httpcore",
        "datasets",
        "matplotlib",
        "accelerate",
        "torch",
    ):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    import warnings

    # library deprecation chatter (transformers 5 renames) is not actionable for our users
    warnings.filterwarnings("ignore", category=FutureWarning)
    warnings.filterwarnings("ignore", category=DeprecationWarning)
    warnings.filterwarnings("ignore", message=".*gradient_checkpointing.*")


def add_file_log(path: Path) -> logging.Handler:
    """A full debug log of this command (the path is shown if the command crashes)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    handler = logging.FileHandler(path, encoding="utf-8")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    handler.addFilter(RedactingFilter())
    handler.setLevel(logging.DEBUG)
    logging.getLogger().addHandler(handler)
    return handler


def write_crash_log(exc: BaseException) -> Path | None:
    import traceback

    path = crash_log_path()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        text = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
        args = " ".join(sys.argv)
        path.write_text(redact(f"command: {args}\n\n{text}"), encoding="utf-8")
    except OSError:
        return None
    return path
