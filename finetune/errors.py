"""Errors a user can act on, and the error catalogue generated from them.

Every user mistake is raised as a `FinetuneError` (or subclass): the CLI shows it as a short
message naming the file/key/row and how to fix it, exits with code 2, and never prints a traceback.
Anything else is a bug and is reported as one line plus the path of a full log.

Each class carries a stable `code`, a `title`, a docstring (the cause) and a `hint` (the usual
fix). `python -m finetune.errors` prints the catalogue in docs/errors.md from these attributes,
so the documentation cannot drift from the code (a test compares the two).
"""

from __future__ import annotations

from dataclasses import dataclass

from finetune.redaction import redact

DOCS = "docs/errors.md"


def first_line(exc: BaseException, limit: int = 300) -> str:
    """The first non-empty line of an exception's message (or its type name), for one-line
    messages that wrap a library's multi-line error."""
    text = str(exc).strip()
    return text.splitlines()[0][:limit] if text else type(exc).__name__


@dataclass(frozen=True)
class Problem:
    """One thing wrong with a recipe, its data or its model, found before any weight loads."""

    where: str
    message: str
    fix: str = ""

    def render(self) -> str:
        """Redacted: a token pasted into a recipe value must not be echoed back."""
        text = f"{self.where}: {self.message}"
        return redact(f"{text}\n    fix: {self.fix}" if self.fix else text)


class FinetuneError(Exception):
    """A usage mistake that fits no narrower class (a flag that cannot apply, nothing to do)."""

    exit_code = 2
    label = "error"  # the word the CLI prints before the message
    code = "E000"
    title = "usage error"
    hint = "read the message: it names the option to change"
    example = "--resume given but there is no checkpoint to resume from"

    def __init__(self, message: str, *, fix: str = "") -> None:
        super().__init__(message)
        self.message = message
        self.fix = fix

    def render(self) -> str:
        """Message, fix and the catalogue code; redacted because messages quote user input."""
        text = f"{self.message}\n  fix: {self.fix}" if self.fix else self.message
        return redact(f"{text}\n  ({self.code}; see {DOCS})")


class RecipeError(FinetuneError):
    """The recipe is not valid YAML, or a key is unknown, missing, mistyped or out of range."""

    code = "E100"
    title = "invalid recipe"
    hint = "fix each listed key (`finetune options` lists every key, type and default)"
    example = "r.yaml: train.lr: Input should be a valid number (got 'abc')"

    def __init__(self, problems: list[Problem]) -> None:
        self.problems = problems
        n = len(problems)
        head = f"{n} problem{'s' if n != 1 else ''} found"
        super().__init__(head + ":\n" + "\n".join("  - " + p.render() for p in problems))


class DataError(FinetuneError):
    """A data file or Hub dataset cannot be used (generic data problem)."""

    code = "E200"
    title = "bad data"
    hint = "the message names the file and line; fix that row or the recipe's data section"
    example = "hub:glue:train: split has no rows"


# a data file's path comes from a recipe's data: entry or a command's argument (init, eval --data)
FILE_NOT_FOUND_FIX = (
    "check the path (the recipe's data: entry, or the file named on the command line)"
)


class DataFileError(DataError):
    """A data file is missing, a directory, unreadable, or not UTF-8 text."""

    code = "E201"
    title = "data file unreadable"
    hint = "check the path in data:, or re-save the file as UTF-8"
    example = "train.csv line 7: bytes that are not UTF-8 (column 12)"


class DataFormatError(DataError):
    """A data file is empty, has only a header, the wrong delimiter, or malformed lines."""

    code = "E202"
    title = "malformed data file"
    hint = "check the delimiter/extension (or set format:), quoting and that rows follow the header"
    example = "train.csv line 3: 1 fields, header has 2"


class DataColumnError(DataError):
    """A column the task needs is not in the file."""

    code = "E203"
    title = "missing column"
    hint = "rename the column in the file, or point task.text / task.label at it"
    example = "train.csv: missing column 'label' (found: text, sentiment)"


class DataValueError(DataError):
    """A row has an empty, null or NaN text or label."""

    code = "E204"
    title = "empty value"
    hint = "remove the row or fill in the value"
    example = "train.csv line 12: column 'text' is an empty string"


class LabelError(DataError):
    """Labels cannot train a classifier: one class, mixed types, or eval labels unseen in train."""

    code = "E205"
    title = "unusable labels"
    hint = "check the label column; every eval label must also occur in train"
    example = "dev.csv line 4: label 'neutral' never appears in the training data"


class AlignmentError(DataError):
    """Line-aligned translation files (train.{lang}) have different line counts."""

    code = "E206"
    title = "misaligned translation files"
    hint = "line N of each file must translate line N of the other; remove the extra lines"
    example = "aligned files have different line counts (train.en: 100, train.de: 99)"


class ColumnGuessError(DataColumnError):
    """`finetune init` cannot tell from names and values which column holds the text, label,
    summary or languages (several candidates, or none)."""

    code = "E207"
    title = "columns ambiguous"
    hint = "pass the column flag the message names (--text, --label, --summary, --source, --task)"
    example = "reviews.csv: cannot tell which column holds the input text (candidates: title, body)"


class ModelError(FinetuneError):
    """A model cannot be found, cannot be reached offline, is of an architecture (model_type) not
    in the table, or cannot run the task."""

    code = "E300"
    title = "model not usable"
    hint = (
        "use a supported architecture (`finetune models`) or a local directory from save_pretrained"
    )
    example = "model.name: ./models/falcon is a 'falcon' model, which finetune does not support"


class RunDirError(FinetuneError):
    """The output directory cannot be used for this run (exists as a file, or is foreign)."""

    code = "E400"
    title = "run directory"
    hint = "set output.dir to a new or empty directory"
    example = "runs/x: is not empty and not a run directory"


class RunFinishedError(RunDirError):
    """The output directory holds a finished (or resumable) run that this run would destroy."""

    code = "E401"
    title = "run already finished"
    hint = "pass --overwrite to replace it, --resume to continue it, or set output.dir"
    example = "runs/x: holds a finished run; refusing to overwrite it"


class RunLockedError(RunDirError):
    """Another process is writing to the same output directory right now (lock held)."""

    code = "E402"
    title = "run directory in use"
    hint = "wait for the other run to finish, or set output.dir elsewhere"
    example = "runs/x: another run is writing here (pid 4242 on host)"


class ResumeMismatchError(RunDirError):
    """`--resume` with a recipe or train data that differ from the ones the checkpoint was
    trained with (only output, logging, checkpoint and eval-schedule keys may change)."""

    code = "E403"
    title = "resume does not match the checkpoint"
    hint = (
        "undo the listed changes (the run's recipe.yaml holds what it was started with), or "
        "start a new run with --overwrite or another output.dir"
    )
    example = "runs/x: cannot resume from step-00000040: train.lr: 0.0005 -> 0.001"


class CheckpointError(FinetuneError):
    """Writing a checkpoint or artefact failed (disk full, permissions); the last one is intact."""

    code = "E500"
    title = "could not write"
    hint = "free disk space or fix permissions, then rerun with --resume"
    example = "could not write runs/x/checkpoints/step-00000004: No space left on device"


class CheckpointCorruptError(CheckpointError):
    """`--resume` found checkpoints, but every one is truncated, corrupted or half-written
    (missing file, size or checksum differing from its manifest, bad safetensors header)."""

    code = "E501"
    title = "no usable checkpoint"
    hint = "start again with --overwrite (the listed checkpoints cannot be loaded)"
    example = "runs/x: no usable checkpoint: step-00000040: model.safetensors is missing"


class NonFiniteLossError(FinetuneError):
    """The training loss became NaN or infinite (learning rate too high, fp16 overflow, bad data).

    The newest checkpoint is kept and is the last good one.
    """

    # checked before the optimizer step, on the loss summed over every process, so every rank
    # raises it at the same step and no checkpoint holds diverged weights

    code = "E600"
    title = "training diverged"
    hint = (
        "lower train.lr, keep train.max_grad_norm on, prefer bf16/fp32 to fp16, check the "
        "targets; rerun with --overwrite or --resume"
    )
    example = "training loss became nan at step 412 (lr 3.00e-03); the last good checkpoint is ..."


class MetricError(FinetuneError):
    """An `eval.metrics` entry cannot be loaded (offline, missing script) or computed."""

    code = "E610"
    title = "extra metric unusable"
    hint = "offline, use a local metric directory; check what inputs the metric expects"
    example = "eval.metrics: 'bertscore' cannot be loaded: Couldn't find a module script"


class RunStoppedError(FinetuneError):
    """Training was stopped by SIGTERM or Ctrl-C (SIGINT): the optimizer step in progress was
    finished and a checkpoint written; not a mistake, so it exits with its own code, 3.

    A second signal quits at once (exit 130 for Ctrl-C, 143 for SIGTERM) and leaves the last
    complete checkpoint.
    """

    exit_code = 3
    label = "stopped"
    code = "E700"
    title = "stopped by a signal"
    hint = "run the printed command: the same recipe and overrides with --resume"
    example = (
        "SIGTERM: stopped after step 40 of 125, checkpoint runs/x/checkpoints/step-00000040; "
        "resume with: finetune run recipes/quickstart.yaml --resume"
    )


UNEXPECTED = (
    "E900",
    "unexpected error",
    "A bug, or an environment problem finetune does not recognise (exit code 1).",
    "read the full log whose path is printed; rerun with --debug for the traceback; report it",
    "unexpected error: RuntimeError: ... full traceback in ~/.cache/finetune/logs/...",
)


def error_classes() -> list[type[FinetuneError]]:
    """Every FinetuneError class in this module, ordered by code."""
    found: list[type[FinetuneError]] = []
    pending: list[type[FinetuneError]] = [FinetuneError]
    while pending:
        cls = pending.pop()
        found.append(cls)
        pending.extend(cls.__subclasses__())
    mine = {c for c in found if c.__module__ == __name__}
    return sorted(mine, key=lambda c: c.code)


def _cell(text: str) -> str:
    return " ".join(text.split()).replace("|", "\\|")


def catalogue_markdown() -> str:
    """The error catalogue as markdown (the content of docs/errors.md)."""
    lines = [
        "# Error catalogue",
        "",
        "<!-- generated by `python -m finetune.errors > docs/errors.md`; do not edit -->",
        "",
        "User mistakes exit with code 2 and no traceback: the message names the file, key or row,",
        "says how to fix it and ends with its code (`finetune validate` lists every recipe",
        "problem, E100, one per line). A run stopped by SIGTERM or Ctrl-C after saving a",
        "checkpoint (E700) exits with code 3 and prints the `--resume` command; a second signal",
        "quits at once with 130 (Ctrl-C) or 143 (SIGTERM). Unexpected errors exit with code 1",
        "and print one line with the cause and the path of a full log (`FINETUNE_LOG_DIR`,",
        "default `~/.cache/finetune/logs`); `--debug` shows the traceback. Hugging Face tokens are",
        "masked as `hf_***` in every message, log and run file.",
        "",
        "| code | error | cause | fix | example message |",
        "|---|---|---|---|---|",
    ]
    rows = [(c.code, c.title, c.__doc__ or "", c.hint, c.example) for c in error_classes()] + [
        UNEXPECTED
    ]
    for code, title, cause, fix, example in rows:
        cells = [code, title, cause, fix, f"`{example}`"]
        lines.append("| " + " | ".join(_cell(c) for c in cells) + " |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":  # pragma: no cover
    print(catalogue_markdown(), end="")
