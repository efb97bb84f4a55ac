"""One rich console each for stdout (results) and stderr (logs, progress, errors), and how the
CLI shows results and errors on them (a user mistake: message + fix, exit 2; a bug: one line and
a crash-log path, exit 1)."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import typer

from finetune.errors import FinetuneError, first_line

STATE: dict[str, Any] = {"debug": False}  # set by the CLI's --debug


@functools.cache
def out_console() -> Any:
    from rich.console import Console

    return Console(soft_wrap=True)


@functools.cache
def err_console() -> Any:
    from rich.console import Console

    return Console(stderr=True, soft_wrap=True)


def metric_items(metrics: dict[str, Any]) -> list[tuple[str, str]]:
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


def handle_errors(func: Callable[..., Any]) -> Callable[..., Any]:
    """User mistakes: message + fix, exit 2. Bugs: one line + a log file path, exit 1."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        from finetune.logs import redact, setup_logging, write_crash_log

        setup_logging(debug=STATE["debug"])
        try:
            return func(*args, **kwargs)
        except FinetuneError as exc:
            print_err(f"[bold red]{exc.label}:[/] {escape(redact(exc.render()))}")
            raise typer.Exit(exc.exit_code) from None
        except (typer.Exit, typer.Abort, KeyboardInterrupt):
            raise
        except Exception as exc:
            if STATE["debug"]:
                raise
            path = write_crash_log(exc)
            cause = redact(first_line(exc))
            print_err(f"[bold red]unexpected error:[/] {type(exc).__name__}: {escape(cause)}")
            print_err(f"full traceback in {path}; rerun with --debug to see it here")
            raise typer.Exit(1) from None

    return wrapper


def escape(text: str) -> str:
    from rich.markup import escape

    return escape(text)


def print_err(message: str) -> None:
    err_console().print(message, highlight=False)


def print_out(message: str) -> None:
    out_console().print(message, highlight=False)


def print_metrics(metrics: dict[str, Any]) -> None:
    for key, shown in metric_items(metrics):
        print_out(f"  {key}: {shown}")
