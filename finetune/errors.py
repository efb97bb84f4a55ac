"""Errors a user can act on.

Every user mistake is raised as a `FinetuneError` (or subclass): the CLI shows it as a short
message naming the file/key/row and how to fix it, exits with code 2, and never prints a traceback.
Anything else is a bug and is reported as one line plus the path of a full log.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Problem:
    """One thing wrong with a recipe, its data or its model, found before any weight loads."""

    where: str
    message: str
    fix: str = ""

    def render(self) -> str:
        text = f"{self.where}: {self.message}"
        return f"{text}\n    fix: {self.fix}" if self.fix else text


class FinetuneError(Exception):
    """A problem the user can fix: shown without traceback, exit code 2."""

    exit_code = 2
    code = "E000"
    title = "error"

    def __init__(self, message: str, *, fix: str = "") -> None:
        super().__init__(message)
        self.message = message
        self.fix = fix

    def render(self) -> str:
        return f"{self.message}\n  fix: {self.fix}" if self.fix else self.message


class RecipeError(FinetuneError):
    """A recipe (or its overrides, data files, model) is invalid; carries every problem at once."""

    code = "E100"
    title = "invalid recipe"

    def __init__(self, problems: list[Problem]) -> None:
        self.problems = problems
        n = len(problems)
        head = f"{n} problem{'s' if n != 1 else ''} found"
        super().__init__(head + ":\n" + "\n".join("  - " + p.render() for p in problems))


class DataError(FinetuneError):
    """A data file is missing, unreadable, empty or malformed."""

    code = "E200"
    title = "bad data"


class ModelError(FinetuneError):
    """A model cannot be found, reached offline, or is of an unsupported family."""

    code = "E300"
    title = "model not usable"


class RunDirError(FinetuneError):
    """The output directory is finished, locked by another run, or not a run directory."""

    code = "E400"
    title = "run directory"


class CheckpointError(FinetuneError):
    """Writing a checkpoint or artefact failed (disk full, permissions); the last one is intact."""

    code = "E500"
    title = "could not write"
