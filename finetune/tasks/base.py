"""The task interface: what differs between classification, summarization and translation.

A task turns table rows into examples (with row-precise errors), examples into token features,
features into batches, and a model's outputs into predictions and metrics. It never knows which
method wraps the model; the training loop never knows which task it runs.
"""

from __future__ import annotations

import logging
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypedDict

from finetune.errors import DataColumnError, DataError, DataValueError
from finetune.recipe.section import Section
from finetune.recipe.sections import DecodingConfig

if TYPE_CHECKING:  # pragma: no cover
    from finetune.data.features import Features
    from finetune.data.readers import Table
    from finetune.models.architecture import Architecture
    from finetune.types import JSON, Batch, Feature, JSONObject, Model, TableRow, Tokenizer

log = logging.getLogger(__name__)

RowCheck = Callable[["TableRow", str], "DataError | None"]  # a row and where it is


@dataclass
class Example:
    """One normalised row. `target` is the label id or the list of reference texts."""

    source: str
    target: Any
    where: str
    pair: str | None = None


@dataclass
class TaskState:
    """What a task learns from the training data and its tokenizer, saved with the run: the
    labels, and a decoder's resolved prompt mode ('chat' / 'plain', tasks/chat.py)."""

    labels: list[str] = field(default_factory=list)
    prompt: str | None = None

    def to_dict(self) -> JSONObject:
        return {"labels": self.labels, "prompt": self.prompt}

    @classmethod
    def from_dict(cls, data: Mapping[str, object] | None) -> TaskState:
        """A saved run's state; runs from before chat prompts have no `prompt` and were plain."""
        found = data or {}
        labels = found.get("labels") or []
        prompt = found.get("prompt", "plain")
        return cls(
            labels=[str(label) for label in labels] if isinstance(labels, list) else [],
            prompt=prompt if isinstance(prompt, str) else None,
        )


class ModelOverrides(TypedDict, total=False):
    """The config keywords a task gives `from_pretrained`: its head's size and label names."""

    num_labels: int
    id2label: dict[int, str]
    label2id: dict[str, int]
    problem_type: str


@dataclass(frozen=True)
class TaskSettings:
    """What a task reads besides its own recipe section: the length limits, the decoding
    settings, extra metrics, and one fact about the method (setup fills it from the recipe and
    the method, so a task never looks a method up)."""

    max_length: int = 128
    max_target_length: int = 128
    decoding: DecodingConfig = field(default_factory=DecodingConfig)
    extra_metrics: tuple[str, ...] = ()
    # the method prepends virtual tokens (prompt learning): peft pads the labels for them, so
    # a task must not cut a batch's labels or logits to the labelled window
    virtual_tokens: bool = False


class Task(ABC):
    """One registry entry: behaviour plus the facts `compare`, cards and docs ask about a task.

    `config_class` is the recipe schema for `task:` (the schema's union is built from the
    registry); `main_metric` is the figure `compare` ranks by and the card reports first.
    """

    name: str = ""
    config_class: type[Section] = Section
    main_metric: str = "loss"
    pipeline_tag: str = ""
    is_generation: bool = False

    def __init__(
        self,
        cfg: Any,
        family: Architecture,
        settings: TaskSettings | None = None,
        tokenizer: Tokenizer | None = None,
    ) -> None:
        self.cfg = cfg  # this task's own recipe section (its config_class)
        self.family = family
        self.settings = settings or TaskSettings()
        self._tokenizer: Tokenizer | None = None
        self.tokenizer = tokenizer
        self.state = TaskState()

    @property
    def tokenizer(self) -> Tokenizer:
        """The base model's tokenizer; setup sets it before anything is encoded."""
        if self._tokenizer is None:
            raise AttributeError(f"the {self.name or 'task'} task has no tokenizer yet")
        return self._tokenizer

    @tokenizer.setter
    def tokenizer(self, value: Tokenizer | None) -> None:
        self._tokenizer = value
        if value is not None:
            self.on_tokenizer(value)

    def on_tokenizer(self, tokenizer: Tokenizer) -> None:
        """What a task settles once it has its tokenizer (generation: language codes, the
        chat prompt); nothing by default."""

    # ------------------------------------------------------------------ schema-level facts

    @classmethod
    @abstractmethod
    def required_columns(cls, cfg: Any) -> list[str]:
        """Columns every data file must have (checked by `validate` from the header alone)."""

    @classmethod
    def parse_row(cls, cfg: Any, row: TableRow, where: str) -> Example | None:
        """One data row as `examples` reads it, raising the DataError `run` would stop at (an
        empty text, a missing label, a target that is not a number). One reader for both, so
        `validate` passes exactly the rows `run` accepts. None: no row-level reading (columns
        only)."""
        return None

    @classmethod
    def row_checker(cls, cfg: Any) -> RowCheck | None:
        """The check `validate`'s row scan runs on every row of a local file: `parse_row`,
        its error returned instead of raised so every bad row is listed at once."""

        def check(row: TableRow, where: str) -> DataError | None:
            try:
                cls.parse_row(cfg, row, where)
            except DataError as exc:
                return exc
            return None

        return check

    @classmethod
    def languages(cls, cfg: Any) -> list[str]:
        """Languages of aligned text files (`train.{lang}`); empty for non-translation tasks."""
        return []

    @classmethod
    def kind_on(cls, arch: Architecture) -> str:
        """Which head this task needs on an architecture: 'classification', 'seq2seq' or
        'causal' (the Auto class and the peft task type follow from it)."""
        return "classification"

    def model_kind(self) -> str:
        return self.kind_on(self.family)

    # ------------------------------------------------------------------ data

    @abstractmethod
    def examples(self, table: Table, split: str) -> list[Example]:
        """Rows -> examples; raise DataError naming the row for anything malformed."""

    def parsed(self, table: Table) -> list[Example]:
        """`examples` for a task that reads rows with `parse_row`: the columns checked, then
        every row through the reader `validate` uses too."""
        check_columns(table, self.required_columns(self.cfg))
        rows = (self.parse_row(self.cfg, row, table.where(i)) for i, row in enumerate(table.rows))
        return [example for example in rows if example is not None]

    def fit(self, train: list[Example]) -> None:
        """Learn run-level state (the label set) from the training examples."""

    def check_example(self, example: Example) -> None:
        """Raise DataError if an example cannot be used after `fit` (an unseen label)."""

    @abstractmethod
    def encode(self, examples: list[Example], training: bool) -> list[Feature]:
        """Examples -> features with token ids, 'idx' and 'length'."""

    @abstractmethod
    def collate(self, features: list[Feature]) -> Batch:
        """Features -> a padded batch of tensors (keeps 'idx')."""

    # ------------------------------------------------------------------ evaluation

    @abstractmethod
    def eval_batch(
        self, model: Model, batch: Batch, predict: bool
    ) -> tuple[list[float] | None, list[Any] | None]:
        """Per-example losses (when the batch has targets) and, if `predict`, predictions.

        Per-example values (not batch means) let evaluation drop the duplicates that
        distributed sharding pads the last batches with, so metrics cover each row once.
        """

    @abstractmethod
    def metrics(self, predictions: list[Any], examples: list[Example]) -> Mapping[str, JSON]:
        """Standard metrics over the whole split."""

    report_name: str = ""

    def report(self, predictions: list[Any], examples: list[Example]) -> JSONObject | None:
        """A detailed report written next to metrics.json as `report_name` (None: no file)."""
        return None

    @abstractmethod
    def prediction_record(self, prediction: Any, example: Example) -> JSONObject:
        """One line of predictions.jsonl."""

    def model_config_overrides(self) -> ModelOverrides:
        """Extra kwargs for `from_pretrained` (num_labels, id2label, ...)."""
        return {}

    def prepare_base(self, model: Model) -> None:
        """Adjust the freshly loaded base before a method wraps it (every command); nothing
        by default."""

    def initialise_head(self, model: Model, new_modules: list[str], train: Features | None) -> None:
        """Set up the new head from the training features before training starts (a fresh
        run only: a resumed run loads its trained head over it); nothing by default."""

    def examples_from_texts(self, texts: list[str]) -> list[Example]:
        """Unlabelled inputs for `finetune predict`."""
        return [Example(source=t, target=None, where=f"input {i + 1}") for i, t in enumerate(texts)]


def require_text(value: object, column: str, where: str) -> str:
    """A non-empty string, or a DataError naming the row and column."""
    if value is None or (isinstance(value, float) and value != value):
        raise DataValueError(f"{where}: column '{column}' is empty (null/NaN)", fix=_EMPTY_FIX)
    text = str(value)
    if not text.strip():
        raise DataValueError(f"{where}: column '{column}' is an empty string", fix=_EMPTY_FIX)
    return text


_EMPTY_FIX = "remove the row or fill in the text"


def check_columns(table: Table, columns: list[str]) -> None:
    present = table.column_names()
    missing = [c for c in columns if c not in present]
    if missing:
        raise DataColumnError(
            f"{table.source}: missing column{'s' if len(missing) > 1 else ''} "
            f"{', '.join(repr(c) for c in missing)} (found: {', '.join(present) or 'none'})",
            fix="rename the column in the file or set task.<column option> in the recipe",
        )


# while a split is encoded in chunks, truncation counts add up here and are logged once
_TALLY: ContextVar[dict[tuple[int, str], list[int]] | None] = ContextVar("tally", default=None)


def warn_truncated(count: int, total: int, limit: int, what: str) -> None:
    tally = _TALLY.get()
    if tally is not None:
        seen = tally.setdefault((limit, what), [0, 0])
        seen[0] += count
        seen[1] += total
    elif count:
        option = "train.max_target_length" if what == "targets" else "train.max_length"
        log.warning(
            "%d of %d %s longer than %d tokens were truncated (raise %s)",
            count,
            total,
            what,
            limit,
            option,
        )


@contextmanager
def truncation_tally() -> Iterator[list[tuple[int, str, int, int]]]:
    """One truncation warning per kind for a whole split, however many chunks encode it.
    Yields a list that holds (limit, what, count, total) per kind once the block ends, so a
    cached split can repeat the warning each time it is used."""
    token = _TALLY.set({})
    summary: list[tuple[int, str, int, int]] = []
    try:
        yield summary
    finally:
        tally = _TALLY.get() or {}
        _TALLY.reset(token)
        for (limit, what), (count, total) in tally.items():
            summary.append((limit, what, count, total))
            warn_truncated(count, total, limit, what)


def tokenize_counting_truncation(
    tokenizer: Tokenizer, texts: list[str], max_length: int, pairs: list[str] | None = None
) -> tuple[dict[str, list[list[int]]], int]:
    """Tokenise with truncation and count exactly how many inputs were cut.

    Returns `input_ids` and, when the tokenizer gives them (BERT-family text pairs),
    `token_type_ids`: the model must see the same segment ids in training as at inference.
    """
    # no attention mask (collate builds it from the lengths) and, for single texts, no segment
    # ids (all 0, which is what BERT-family models assume when none are passed): less to convert
    # from the tokenizer's Rust objects and less to hold per row
    options = {"return_attention_mask": False, "return_token_type_ids": None if pairs else False}
    probe = tokenizer(texts, pairs, truncation=True, max_length=max_length + 1, **options)
    keys = [k for k in ("input_ids", "token_type_ids") if k in probe]
    encoded = {k: list(probe[k]) for k in keys}
    cut = [i for i, seq in enumerate(encoded["input_ids"]) if len(seq) > max_length]
    if cut:
        redo = tokenizer(
            [texts[i] for i in cut],
            [pairs[i] for i in cut] if pairs else None,
            truncation=True,
            max_length=max_length,
            **options,
        )
        for key in keys:
            for i, seq in zip(cut, redo[key]):
                encoded[key][i] = seq
    return encoded, len(cut)
