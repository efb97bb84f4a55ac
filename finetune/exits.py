"""How a command ends: a user mistake prints its message and fix and exits 2; a bug prints one
line and the path of a crash log and exits 1 (the traceback with `--debug`)."""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import ParamSpec, TypeVar

import typer

from finetune.console import escape, print_err
from finetune.errors import FinetuneError, first_line

STATE: dict[str, bool] = {"debug": False}  # set by the CLI's --debug

P = ParamSpec("P")
R = TypeVar("R")


def handle_errors(func: Callable[P, R]) -> Callable[P, R]:
    """User mistakes: message + fix, exit 2. Bugs: one line + a log file path, exit 1."""

    @functools.wraps(func)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        from finetune.logs import setup_logging, write_crash_log
        from finetune.redaction import redact

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


@contextmanager
def rerun_to_continue(command: str) -> Iterator[None]:
    """Ctrl-C in `compare` / `sweep`: the point being trained has checkpointed itself (its own
    `finetune run` got the signal too); say how to continue instead of ending silently."""
    try:
        yield
    except KeyboardInterrupt:
        print_err(
            f"[bold yellow]interrupted:[/] rerun the same `finetune {command}` command to "
            "continue: finished points are read back, an interrupted one resumes from its "
            "checkpoint"
        )
        raise typer.Exit(130) from None
