"""Logging through `logging` + rich, with every Hugging Face token redacted.

Tokens can reach messages through URLs, exceptions from huggingface_hub or a user pasting one
into a recipe; the filter below rewrites every record (console and files) so none is ever shown.
"""

from __future__ import annotations

import collections
import logging
import os
import sys
import tempfile
import time
from pathlib import Path

from finetune.redaction import redact


class RedactingFilter(logging.Filter):
    """Rewrites message and traceback text of every record before any handler formats it."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        cleaned = redact(message)
        if cleaned != message or record.args:
            record.msg, record.args = cleaned, None
        if record.exc_info and not record.exc_text:
            # formatters cache exc_text; filling it here means they print the redacted one
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = redact(record.exc_text)
        return True


class RecentRecords(logging.Handler):
    """Keeps the last records of this command in memory, so a crash log holds the full story.

    The console shows INFO and above; when a command crashes, the DEBUG records that led up to it
    are what a bug report needs, and they are written next to the traceback.
    """

    def __init__(self, capacity: int = 2000) -> None:
        super().__init__(level=logging.DEBUG)
        self.lines: collections.deque[str] = collections.deque(maxlen=capacity)
        self.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        self.addFilter(RedactingFilter())

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self.lines.append(self.format(record))
        except Exception:  # a broken record must never hide the original crash
            self.handleError(record)


RECENT = RecentRecords()


def crash_log_path() -> Path:
    base = Path(os.environ.get("FINETUNE_LOG_DIR", Path.home() / ".cache" / "finetune" / "logs"))
    return base / f"finetune-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}.log"


def is_main_rank() -> bool:
    """Whether this is the main process of a launched run (or not launched at all): the
    launchers (torchrun, accelerate launch) set RANK before Python starts, so this holds
    before any Accelerator exists."""
    return int(os.environ.get("RANK", "0") or 0) == 0


def setup_logging(debug: bool = False, quiet: bool = False) -> None:
    from rich.logging import RichHandler

    from finetune.console import err_console

    root = logging.getLogger()
    for handler in list(root.handlers):
        root.removeHandler(handler)
    level = logging.DEBUG if debug else (logging.WARNING if quiet else logging.INFO)
    if not is_main_rank():  # other ranks of a multi-process run: warnings and errors only
        level = max(level, logging.WARNING)
    handler = RichHandler(
        console=err_console(), show_path=debug, show_time=False, rich_tracebacks=debug
    )
    handler.addFilter(RedactingFilter())
    handler.setLevel(level)
    root.addHandler(handler)
    RECENT.lines.clear()
    root.addHandler(RECENT)
    root.setLevel(logging.DEBUG)
    for noisy in (
        "urllib3",
        "filelock",
        "fsspec",
        "httpx",
        "httpx2",  # huggingface_hub 2.x's HTTP client: one INFO line per Hub request
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
    """Command line, versions, this command's log records and the traceback, all redacted."""
    import platform
    import traceback

    from finetune import __version__

    path = crash_log_path()
    trace = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
    parts = [
        f"command: {' '.join(sys.argv)}",
        f"finetune {__version__}, python {platform.python_version()}, {platform.platform()}",
        "",
        "log:",
        *RECENT.lines,
        "",
        trace,
    ]
    text = redact("\n".join(parts))
    fallback = Path(tempfile.gettempdir()) / path.name  # the log dir may be the broken part
    for candidate in (path, fallback):
        try:
            candidate.parent.mkdir(parents=True, exist_ok=True)
            candidate.write_text(text, encoding="utf-8")
        except OSError:
            continue
        return candidate
    return None
