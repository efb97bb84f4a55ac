"""Guessing a task from a data file's columns: which column is the text, the label, the summary
or a language, from names first and value types second; ambiguity is an error naming the flag.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from finetune.data.readers import EXTENSIONS, LANG_PLACEHOLDER, read_local
from finetune.data.sources import LocalSource
from finetune.errors import (
    ColumnGuessError,
    DataColumnError,
    FinetuneError,
    LabelError,
)
from finetune.tasks.translation import LANGUAGE_NAMES

DEFAULT_MODEL = "bundled:minilm-l6"
GENERATION_MODEL_HINT = "google-t5/t5-small"
DEFAULT_METHOD = "lora"
SAMPLE_ROWS = 2000
EVAL_FRACTION = 0.1
EVAL_WORDS = ("dev", "valid", "validation", "val", "eval")  # preferred in this order
TEST_WORDS = ("test",)
TRAIN_WORDS = ("train", "training")
IGNORED = {"id", "idx", "index", "guid", "uid", "unnamed: 0"}
TEXT_NAMES = ("text", "sentence", "review", "content", "comment", "tweet", "utterance", "input")
LABEL_NAMES = ("label", "labels", "class", "category", "sentiment", "intent", "topic", "target")
SUMMARY_NAMES = ("summary", "summaries", "highlights", "abstract", "headline", "tldr")
DOCUMENT_NAMES = ("document", "dialogue", "dialog", "article", "text", "content", "body", "input")
PAIR_NAMES = (
    ("sentence1", "sentence2"),
    ("premise", "hypothesis"),
    ("question", "sentence"),
    ("question1", "question2"),
    ("text_a", "text_b"),
    ("text1", "text2"),
)


@dataclass
class InitOptions:
    """What the command line may force instead of guessing (column names, task, model...)."""

    task: str | None = None
    model: str | None = None
    method: str = DEFAULT_METHOD
    out: Path | None = None
    force: bool = False
    text: str | None = None
    text_pair: str | None = None
    label: str | None = None
    summary: str | None = None
    source: str | None = None
    target: str | None = None
    header: bool | None = None  # csv/tsv: line 1 is a header (None: guess, guess_layout.py)
    quoting: str | None = None  # csv/tsv: rfc4180 or none (None: guess)


@dataclass
class Sample:
    """The first rows of the training file, read with the project's own readers."""

    path: Path
    recipe_path: str  # as the recipe will name it: a file, or 'dir/train.{lang}'
    columns: list[str]
    rows: Sequence[Mapping[str, object]]  # as the data readers parsed them
    truncated: bool
    langs: list[str] = field(default_factory=list)  # aligned text files only


@dataclass
class TaskGuess:
    """The `task:` section to write, with a comment per key saying where it came from."""

    type: str
    keys: dict[str, str]  # task key -> column name or language code
    comments: dict[str, str]
    summary: str


# --------------------------------------------------------------------------- reading


def _lang_code(name: str) -> str | None:
    """'en', 'de', 'pt-br' -> the code; anything that is not a known language code -> None."""
    lowered = name.strip().lower()
    base = lowered.replace("_", "-").split("-")[0]
    return lowered if base in LANGUAGE_NAMES and len(lowered) <= 5 else None


def aligned_lang(path: Path) -> str | None:
    """`train.en` -> 'en' when the suffix is a language code, not a data format."""
    suffix = path.suffix.lstrip(".")
    if path.suffix.lower() in EXTENSIONS or LANG_PLACEHOLDER in path.name:
        return None
    return _lang_code(suffix)


def _aligned_files(data_file: Path) -> tuple[Path, list[str]] | None:
    """(dir/train.{lang}, languages found) for aligned text files, else None."""
    if LANG_PLACEHOLDER in data_file.name:
        stem = data_file.name.split(".")[0]
        first = None
    elif aligned_lang(data_file):
        stem, first = data_file.name.split(".")[0], aligned_lang(data_file)
    else:
        return None
    folder = data_file.parent
    langs = sorted(
        code
        for p in folder.glob(f"{stem}.*")
        if p.is_file() and (code := _lang_code(p.name[len(stem) + 1 :]))
    )
    if first in langs:  # the file named on the command line is the source language
        langs.remove(first)
        langs.insert(0, first)
    return folder / f"{stem}.{LANG_PLACEHOLDER}", langs


def read_sample(data_file: Path) -> Sample:
    aligned = _aligned_files(data_file)
    if aligned is not None:
        pattern, langs = aligned
        if len(langs) < 2:
            raise FinetuneError(
                f"{data_file}: aligned text files need one file per language "
                f"(found {', '.join(langs) or 'none'} beside it)",
                fix=f"add the other language, e.g. {pattern.name.replace(LANG_PLACEHOLDER, 'de')}",
            )
        source = LocalSource(path=str(pattern), format="text")
        table = read_local(source, None, SAMPLE_ROWS, langs)
        return Sample(pattern, str(pattern), langs, table.rows, len(table) >= SAMPLE_ROWS, langs)
    table = read_local(LocalSource(path=str(data_file)), None, SAMPLE_ROWS)
    columns = list(table.column_names())
    for row in table.rows:  # JSON Lines rows may add keys after the first row
        columns += [key for key in row if key not in columns]
    return Sample(data_file, str(data_file), columns, table.rows, len(table) >= SAMPLE_ROWS)


# --------------------------------------------------------------------------- column types


def _values(sample: Sample, column: str) -> list[object]:
    return [row.get(column) for row in sample.rows if row.get(column) not in (None, "")]


def _is_text(sample: Sample, column: str) -> bool:
    """Strings of several words on average: something a model reads."""
    values = _values(sample, column)
    texts = [v for v in values if isinstance(v, str)]
    if not values or len(texts) < len(values):
        return False
    return sum(len(v.split()) for v in texts) / len(texts) >= 2


def _is_label_like(sample: Sample, column: str) -> bool:
    """Ints or a few words per value: a class name, not a sentence (`target` may be either)."""
    values = _values(sample, column)
    if not values or any(isinstance(v, (dict, list, float)) for v in values):
        return False
    return not any(isinstance(v, str) and len(v.split()) > 3 for v in values)


def _is_categorical(sample: Sample, column: str) -> bool:
    """Label-like with few distinct values: something a classifier predicts, unnamed."""
    if not _is_label_like(sample, column):
        return False
    values = _values(sample, column)
    distinct = {str(v).strip() for v in values}
    return 2 <= len(distinct) <= max(2, min(100, len(values) // 2))


def _named(columns: Iterable[str], names: tuple[str, ...]) -> list[str]:
    """Columns whose lower-cased name is one of `names`, in the order of `names`."""
    by_name = {c.lower(): c for c in columns}
    return [by_name[n] for n in names if n in by_name]


def _candidates(sample: Sample) -> list[str]:
    return [c for c in sample.columns if c.lower() not in IGNORED]


COLUMN_FLAGS = ("--text", "--text-pair", "--label", "--summary", "--source", "--target")


def _ambiguous(sample: Sample, what: str, found: list[str], flag: str) -> ColumnGuessError:
    listed = ", ".join(found) if found else "none"
    return ColumnGuessError(
        f"{sample.recipe_path}: cannot tell which column holds the {what} "
        f"(candidates: {listed}; columns: {', '.join(sample.columns)})",
        fix=f"pass {flag} COLUMN (the other column flags: "
        f"{', '.join(f for f in COLUMN_FLAGS if f != flag)}; or --task)",
    )


def _require(sample: Sample, column: str | None, flag: str) -> str | None:
    if column is not None and column not in sample.columns:
        raise DataColumnError(
            f"{flag} {column}: {sample.recipe_path} has no such column "
            f"(columns: {', '.join(sample.columns)})",
            fix=f"pass {flag} with one of those column names",
        )
    return column


# --------------------------------------------------------------------------- task guessing


def guess_task(sample: Sample, opts: InitOptions) -> TaskGuess:
    """--task and column flags win; otherwise the columns decide, or the error names flags."""
    for flag, column in (
        ("--text", opts.text),
        ("--text-pair", opts.text_pair),
        ("--label", opts.label),
        ("--summary", opts.summary),
    ):
        _require(sample, column, flag)
    task = opts.task or _task_from_flags(opts) or _task_from_columns(sample)
    if task is None:
        raise ColumnGuessError(
            f"{sample.recipe_path}: cannot tell the task from the columns "
            f"{', '.join(sample.columns)}",
            fix="pass --task classification --text COL --label COL, or --task summarization "
            "--text COL --summary COL, or --task translation --source COL --target COL",
        )
    guessers = {
        "classification": _classification,
        "summarization": _summarization,
        "translation": _translation,
    }
    return guessers[task](sample, opts)


def _task_from_flags(opts: InitOptions) -> str | None:
    if opts.label or opts.text_pair:
        return "classification"
    if opts.summary:
        return "summarization"
    if opts.source or opts.target:
        return "translation"
    return None


def _task_from_columns(sample: Sample) -> str | None:
    if sample.langs or len(_language_columns(sample)) >= 2 or _dict_column(sample):
        return "translation"
    if _named(sample.columns, SUMMARY_NAMES):
        return "summarization"
    labels = [c for c in _named(_candidates(sample), LABEL_NAMES) if _is_label_like(sample, c)]
    if labels or any(_is_categorical(sample, c) for c in _candidates(sample)):
        return "classification"
    return None


def _classification(sample: Sample, opts: InitOptions) -> TaskGuess:
    label = opts.label or _pick_label(sample, exclude={opts.text, opts.text_pair})
    text, pair = _pick_texts(sample, opts, exclude={label})
    values = sorted({str(v).strip() for v in _values(sample, label)})
    if len(values) < 2 and not sample.truncated:
        raise LabelError(
            f"{sample.recipe_path}: column {label!r} has {len(values)} distinct value(s) "
            f"({', '.join(values) or 'none'}); a classifier needs at least two classes",
            fix="pass --label with the column that holds the classes",
        )
    where = f"the first {len(sample.rows)} rows" if sample.truncated else f"{len(sample.rows)} rows"
    shown = ", ".join(values[:10]) + (", ..." if len(values) > 10 else "")
    keys = {"type": "classification", "text": text}
    comments = {"text": "column with the input text"}
    if pair:
        keys["text_pair"] = pair
        comments["text_pair"] = "second text of each pair"
    keys["label"] = label
    comments["label"] = f"{len(values)} labels in {where}: {shown}"
    summary = f"{text}{f' + {pair}' if pair else ''} -> {label}, {len(values)} labels"
    return TaskGuess("classification", keys, comments, summary)


def _pick_label(sample: Sample, exclude: set[str | None]) -> str:
    columns = [c for c in _candidates(sample) if c not in exclude]
    named = [c for c in _named(columns, LABEL_NAMES) if _is_label_like(sample, c)]
    if len(named) == 1 or (named and named[0].lower() == "label"):
        return named[0]
    categorical = [c for c in columns if _is_categorical(sample, c)]
    if len(categorical) == 1 and not named:
        return categorical[0]
    raise _ambiguous(sample, "label", named or categorical, "--label")


def _pick_texts(
    sample: Sample, opts: InitOptions, exclude: set[str | None]
) -> tuple[str, str | None]:
    if opts.text:
        return opts.text, opts.text_pair
    columns = [c for c in _candidates(sample) if c not in exclude]
    for first, second in PAIR_NAMES:
        pair = _named(columns, (first, second))
        if len(pair) == 2:
            return pair[0], opts.text_pair or pair[1]
    texts = [c for c in columns if _is_text(sample, c)]
    named = _named(columns, TEXT_NAMES)
    if len(texts) == 1:
        return texts[0], opts.text_pair
    if len(named) == 1 and (not texts or named[0] in texts):
        return named[0], opts.text_pair
    raise _ambiguous(sample, "input text", texts or named, "--text")


def _summarization(sample: Sample, opts: InitOptions) -> TaskGuess:
    columns = _candidates(sample)
    summaries = [opts.summary] if opts.summary else _named(columns, SUMMARY_NAMES)
    if len(summaries) != 1:
        raise _ambiguous(sample, "summary", summaries, "--summary")
    summary = summaries[0]
    rest = [c for c in columns if c != summary]
    if opts.text:
        text = opts.text
    else:
        named = _named(rest, DOCUMENT_NAMES)
        texts = [c for c in rest if _is_text(sample, c)]
        found = named[:1] if named else texts
        if len(found) != 1:
            raise _ambiguous(sample, "document to summarise", named or texts, "--text")
        text = found[0]
    keys = {"type": "summarization", "text": text, "summary": summary}
    comments = {"text": "column with the document to summarise", "summary": "reference summary"}
    return TaskGuess("summarization", keys, comments, f"{text} -> {summary}")


def _language_columns(sample: Sample) -> list[str]:
    return [c for c in sample.columns if _lang_code(c)]


def _dict_languages(sample: Sample, column: str) -> list[str]:
    """The language-code keys of a column's first value when it is a {lang: text} dict."""
    values = _values(sample, column)
    first = values[0] if values else None
    return [str(k) for k in first if _lang_code(str(k))] if isinstance(first, dict) else []


def _dict_column(sample: Sample) -> str | None:
    """A column of {lang: text} dicts (the Hub WMT layout), if there is exactly one."""
    found = [c for c in sample.columns if len(_dict_languages(sample, c)) >= 2]
    return found[0] if len(found) == 1 else None


def _code_for(column: str) -> str | None:
    """A column's language code: 'de' -> 'de', 'German' -> 'de', 'src' -> None."""
    code = _lang_code(column)
    if code:
        return code
    names = {name.lower(): key for key, name in LANGUAGE_NAMES.items()}
    return names.get(column.strip().lower())


def _translation(sample: Sample, opts: InitOptions) -> TaskGuess:
    dict_column = _dict_column(sample)
    if dict_column and not (opts.source or opts.target):
        langs = _dict_languages(sample, dict_column)
        return _translation_guess(langs[0], langs[1], None, None, dict_column)
    columns = sample.langs or _language_columns(sample)
    for flag, column in (("--source", opts.source), ("--target", opts.target)):
        if column is not None and column not in sample.columns:
            _require(sample, column, flag)
    chosen = [c for c in (opts.source, opts.target) if c]
    rest = [c for c in columns if c not in chosen]
    if len(chosen) + len(rest) < 2 or (len(chosen) + len(rest) > 2 and len(chosen) < 2):
        raise _ambiguous(sample, "source and target languages", columns, "--source/--target")
    source = opts.source or rest.pop(0)
    target = opts.target or rest.pop(0)
    src_code, tgt_code = _code_for(source) or "en", _code_for(target) or "de"
    return _translation_guess(
        src_code,
        tgt_code,
        source if source != src_code else None,
        target if target != tgt_code else None,
        None,
    )


def _translation_guess(
    src: str, tgt: str, source: str | None, target: str | None, dict_column: str | None
) -> TaskGuess:
    keys = {"type": "translation", "source_lang": src, "target_lang": tgt}
    comments = {
        "source_lang": "language codes pick the T5 prefix and sacreBLEU's tokenizer",
        "target_lang": "swap the two to translate the other way",
    }
    if source:
        keys["source"], comments["source"] = source, "source column"
    if target:
        keys["target"], comments["target"] = target, "target column"
    if dict_column:
        keys["translation_column"] = dict_column
        comments["translation_column"] = "column of {lang: text} dicts"
    return TaskGuess("translation", keys, comments, f"{src} -> {tgt}")
