"""Bad data: every case gives its own clear message naming the file (and line/column) and a fix.

Most cases go through `read_local` + the classification task exactly as `finetune run` does
(`load_splits`), or through `check_recipe` as `finetune validate` does; one goes through the CLI.
Nothing here loads model weights except the truncation case, which needs a real tokenizer.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest

from finetune.cli import app
from finetune.data.readers import read_local
from finetune.errors import (
    AlignmentError,
    DataColumnError,
    DataError,
    DataFileError,
    DataFormatError,
    DataValueError,
    LabelError,
)
from finetune.models import FAMILIES
from finetune.recipe.schema import LocalSource, Recipe
from finetune.setup.checks import check_recipe
from finetune.setup.data import load_splits
from finetune.setup.task import make_task
from tests.conftest import write_recipe

GOOD_ROWS = "text,label\ngood film,1\nbad film,0\nfine plot,1\ndull story,0\n"


def write(path: Path, content: str | bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(content if isinstance(content, bytes) else content.encode("utf-8"))
    return path


def read(path: Path, **kwargs: Any) -> Any:
    return read_local(LocalSource(path=str(path)), None, **kwargs)


def recipe_for(train: Path, dev: Path | None = None, model: Path | None = None) -> Recipe:
    data: dict[str, Any] = {"train": str(train)}
    if dev is not None:
        data["eval"] = str(dev)
    return Recipe.model_validate(
        {
            "model": {"name": str(model or "bert-base-uncased")},
            "task": {"type": "classification"},
            "data": data,
            "method": {"name": "lora"},
            "train": {"max_length": 8},
        }
    )


def splits(train: Path, dev: Path | None = None) -> Any:
    """What `finetune run` does with the data before any model loads."""
    recipe = recipe_for(train, dev)
    task = make_task(recipe, FAMILIES["bert"])
    return load_splits(task, recipe, train.parent)


def error_text(excinfo: pytest.ExceptionInfo) -> str:
    return excinfo.value.render()


def bert_model_dir(root: Path) -> Path:
    """validate reads only config.json of the model."""
    (root / "model").mkdir(parents=True, exist_ok=True)
    (root / "model" / "config.json").write_text(json.dumps({"model_type": "bert"}))
    return root / "model"


def validate_problems(
    tmp_path: Path, train: Path | str, scan_rows: bool = False, **task: Any
) -> list[str]:
    data = {
        "model": {"name": str(bert_model_dir(tmp_path))},
        "task": {"type": "classification", **task},
        "data": {"train": str(train)},
        "method": {"name": "lora"},
    }
    _, problems = check_recipe(write_recipe(tmp_path / "r.yaml", data), scan_rows=scan_rows)
    return [p.render() for p in problems]


# --------------------------------------------------------------------------- files


def test_missing_file(tmp_path):
    with pytest.raises(DataFileError) as excinfo:
        read(tmp_path / "nope.csv")
    assert "nope.csv: file not found" in error_text(excinfo)
    assert "check the path" in error_text(excinfo)


def test_missing_file_in_validate_names_the_key(tmp_path):
    (problem,) = validate_problems(tmp_path, tmp_path / "nope.csv")
    assert "data.train" in problem and "file not found" in problem and "fix:" in problem


def test_directory_instead_of_file(tmp_path):
    (tmp_path / "train.csv").mkdir()
    with pytest.raises(DataFileError) as excinfo:
        read(tmp_path / "train.csv")
    assert "train.csv: is a directory" in error_text(excinfo)


def test_fifo_is_refused_without_blocking(tmp_path):
    """Opening a pipe with no writer would hang forever; it must be refused up front."""
    fifo = tmp_path / "train.csv"
    os.mkfifo(fifo)
    with pytest.raises(DataFileError) as excinfo:
        read(fifo)
    assert "not a regular file" in error_text(excinfo)
    problems = validate_problems(tmp_path, fifo)
    assert any("not a regular file" in p for p in problems)


def test_unreadable_file(tmp_path, monkeypatch):
    """chmod 000 does not stop root, so the permission error is injected at open()."""
    path = write(tmp_path / "train.csv", GOOD_ROWS)
    real_open = Path.open

    def denied(self: Path, *args: Any, **kwargs: Any) -> Any:
        if self == path:
            raise PermissionError(13, "Permission denied", str(self))
        return real_open(self, *args, **kwargs)

    monkeypatch.setattr(Path, "open", denied)
    with pytest.raises(DataFileError) as excinfo:
        read(path)
    text = error_text(excinfo)
    assert "train.csv: cannot be read (Permission denied)" in text and "chmod" in text


def test_utf8_bom_is_accepted(tmp_path):
    table = read(write(tmp_path / "train.csv", b"\xef\xbb\xbf" + GOOD_ROWS.encode()))
    assert table.column_names() == ["text", "label"]


# --------------------------------------------------------------------------- format and columns


def test_tab_separated_file_named_csv(tmp_path):
    path = write(tmp_path / "train.csv", "text\tlabel\ngood\t1\nbad\t0\n")
    with pytest.raises(DataFormatError) as excinfo:
        read(path)
    text = error_text(excinfo)
    assert "train.csv line 1" in text and "looks tab-separated" in text
    assert "rename the file to .tsv" in text
    assert any("looks tab-separated" in p for p in validate_problems(tmp_path, path))


def test_missing_column_in_validate(tmp_path):
    path = write(tmp_path / "train.csv", "text,sentiment\ngood,1\n")
    (problem,) = validate_problems(tmp_path, path)
    assert "has no column 'label' (found: text, sentiment)" in problem
    assert "task.label" in problem


def test_parquet_missing_column_found_from_the_schema(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    path = tmp_path / "train.parquet"
    pq.write_table(pa.table({"text": ["good", "bad"], "sentiment": [1, 0]}), path)
    (problem,) = validate_problems(tmp_path, path)
    assert "has no column 'label' (found: text, sentiment)" in problem


# --------------------------------------------------------------------------- values and labels


@pytest.mark.parametrize("value", ["null", "NaN"])
def test_null_or_nan_text(tmp_path, value):
    content = f'{{"text": "good", "label": 1}}\n{{"text": {value}, "label": 0}}\n'
    with pytest.raises(DataValueError) as excinfo:
        splits(write(tmp_path / "train.jsonl", content))
    assert "train.jsonl line 2: column 'text' is empty (null/NaN)" in error_text(excinfo)


@pytest.mark.parametrize("value", ["null", "NaN", '""'])
def test_null_or_nan_label(tmp_path, value):
    content = f'{{"text": "good", "label": 1}}\n{{"text": "bad", "label": {value}}}\n'
    with pytest.raises(DataValueError) as excinfo:
        splits(write(tmp_path / "train.jsonl", content))
    assert "train.jsonl line 2: column 'label' (label) is empty" in error_text(excinfo)


def test_eval_label_not_in_train(tmp_path):
    train = write(tmp_path / "train.csv", "text,label\ngood,pos\nbad,neg\n")
    dev = write(tmp_path / "dev.csv", "text,label\ngood,pos\nmeh,neutral\n")
    with pytest.raises(LabelError) as excinfo:
        splits(train, dev)
    text = error_text(excinfo)
    assert "dev.csv line 3: label 'neutral' never appears in the training data" in text
    assert "training labels: neg, pos" in text


def test_integer_labels_written_as_floats_are_integers(tmp_path):
    path = write(
        tmp_path / "train.jsonl", '{"text": "a", "label": 1.0}\n{"text": "b", "label": 0}\n'
    )
    assert [ex.target for ex in splits(path).train] == [("int", "1"), ("int", "0")]


def test_duplicate_rows_are_a_warning_with_count_and_lines(tmp_path, caplog):
    content = "text,label\ngood,1\nbad,0\ngood,1\nfine,1\nbad,0\ngood,1\n"
    with caplog.at_level(logging.WARNING, logger="finetune.data.readers"):
        table = read(write(tmp_path / "train.csv", content))
    assert len(table) == 6  # kept: a warning, not an error
    (record,) = [r for r in caplog.records if "duplicate" in r.getMessage()]
    message = record.getMessage()
    assert "train.csv: 3 duplicate rows" in message
    assert "line 4 repeats line 2; line 6 repeats line 3; line 7 repeats line 2" in message


def test_no_duplicate_warning_for_distinct_rows(tmp_path, caplog):
    with caplog.at_level(logging.WARNING, logger="finetune.data.readers"):
        read(write(tmp_path / "train.csv", GOOD_ROWS))
    assert not [r for r in caplog.records if "duplicate" in r.getMessage()]


# ------------------------------------------------------------------ one bad file, one message
# (file name, content, error class, substrings the rendered message must hold)

READ_ERRORS = {
    "empty file": ("train.csv", "", DataFormatError, ["train.csv: file is empty"]),
    "header only": (
        "train.csv",
        "text,label\n",
        DataFormatError,
        ["train.csv: has a header but no rows", "add examples"],
    ),
    "empty jsonl": ("train.jsonl", "\n\n", DataFormatError, ["train.jsonl: has no rows"]),
    "unknown extension": (
        "train.xlsx",
        "x",
        DataFormatError,
        ["cannot tell the format", "format:"],
    ),
    "non-UTF-8 bytes": (
        "train.csv",
        b"text,label\ngood,1\ncaf\xe9 bad,0\n",
        DataFileError,
        ["train.csv line 3 column 4: bytes that are not UTF-8", "iconv"],
    ),
    "comma-separated .tsv": (
        "train.tsv",
        "text,label\ngood,1\n",
        DataFormatError,
        ["looks comma-separated"],
    ),
    "semicolon-separated": (
        "train.csv",
        "text;label\ngood;1\n",
        DataFormatError,
        ["semicolon-separated"],
    ),
    "wrong field count": (
        "train.csv",
        "text,label\ngood,1\nbad, really bad,0\n",
        DataFormatError,
        ["train.csv line 3: 3 fields, header has 2", "quote fields"],
    ),
    "unclosed quote": (
        "train.csv",
        'text,label\n"good,1\nbad,0\nfine,1\n',
        DataFormatError,
        ["train.csv line 2", "unclosed quote"],
    ),
    "repeated column name": (
        "train.csv",
        "text,text,label\na,b,1\n",
        DataFormatError,
        ["line 1 column 2: column name 'text' appears twice"],
    ),
    "invalid JSON line": (
        "train.jsonl",
        '{"text": "a", "label": 1}\n{"text": "b", label: 0}\n',
        DataFormatError,
        ["train.jsonl line 2 column 15: invalid JSON"],
    ),
    "JSON line not an object": (
        "train.jsonl",
        '{"text": "a", "label": 1}\n["b", 0]\n',
        DataFormatError,
        ["train.jsonl line 2: a JSON list, not an object"],
    ),
}


@pytest.mark.parametrize("case", list(READ_ERRORS))
def test_bad_file_is_refused_with_its_location(tmp_path, case):
    name, content, error, expected = READ_ERRORS[case]
    with pytest.raises(error) as excinfo:
        read(write(tmp_path / name, content))
    text = error_text(excinfo)
    for part in expected:
        assert part in text


# what `run` finds in the rows before any model loads
SPLIT_ERRORS = {
    "empty text": (
        "train.csv",
        "text,label\ngood,1\n  ,0\n",
        DataValueError,
        ["train.csv line 3: column 'text' is an empty string", "fix:"],
    ),
    "line numbers survive multi-line fields and blank lines": (
        "train.csv",
        'text,label\n"two\nlines",1\n\nbad,0\n,1\n',
        DataValueError,
        ["train.csv line 6: column 'text' is an empty string"],
    ),
    "JSON array rows are named by row": (
        "train.json",
        '[{"text": "good", "label": 1}, {"text": "", "label": 0}]',
        DataValueError,
        ["train.json row 2: column 'text' is an empty string"],
    ),
    "single class": (
        "train.csv",
        "text,label\ngood,1\nfine,1\n",
        LabelError,
        ["train.csv: every training label is '1'", "at least two classes"],
    ),
    "mixed label types": (
        "train.csv",
        "text,label\ngood,1\nbad,0\nmeh,neutral\n",
        LabelError,
        ["train.csv line 4: label 'neutral' is text", "mixed label types"],
    ),
    "missing column at run time": (
        "train.jsonl",
        '{"text": "good", "sentiment": 1}\n',
        DataColumnError,
        ["train.jsonl: missing column 'label' (found: text, sentiment)"],
    ),
}


@pytest.mark.parametrize("case", list(SPLIT_ERRORS))
def test_bad_rows_are_refused_with_their_location(tmp_path, case):
    name, content, error, expected = SPLIT_ERRORS[case]
    with pytest.raises(error) as excinfo:
        splits(write(tmp_path / name, content))
    text = error_text(excinfo)
    for part in expected:
        assert part in text


# rows `run` refuses: `validate` must list the same problems, every bad row at once
ROW_VALUE_ERRORS = {  # task, file name, content, how many rows are bad
    "empty and null texts": (
        {"type": "classification"},
        "train.jsonl",
        '{"text": "good", "label": 1}\n{"text": "  ", "label": 0}\n{"text": null, "label": 1}\n',
        2,
    ),
    "empty label": ({"type": "classification"}, "train.tsv", "text\tlabel\ngood\t1\nbad\t\n", 1),
    "empty second text": (
        {"type": "classification", "text_pair": "hypothesis"},
        "train.csv",
        "text,hypothesis,label\na,b,1\nc,,0\nd,e,1\n",
        1,
    ),
    "regression target not a number": (
        {"type": "regression"},
        "train.csv",
        "text,label\na,1.5\nb,high\nc,\n",
        2,
    ),
    "summary missing": (
        {"type": "summarization"},
        "train.jsonl",
        '{"text": "a long text", "summary": "short"}\n{"text": "more", "summary": ""}\n',
        1,
    ),
}


@pytest.mark.parametrize("case", list(ROW_VALUE_ERRORS))
def test_validate_lists_every_row_run_would_refuse(tmp_path, case):
    """`validate` reads rows with the task's own reader (`Task.parse_row`), so it passes
    exactly what `run` accepts, and a user fixes every bad row from one `validate`."""
    task, name, content, bad_rows = ROW_VALUE_ERRORS[case]
    path = write(tmp_path / name, content)
    problems = validate_problems(tmp_path, path, scan_rows=True, **task)
    recipe = Recipe.model_validate(
        {
            "model": {"name": "bert-base-uncased"},
            "task": task,
            "data": {"train": str(path)},
            "method": {"name": "lora"},
        }
    )
    with pytest.raises(DataError) as excinfo:  # what `run` stops at: the first bad row
        load_splits(make_task(recipe, FAMILIES["bert"]), recipe, tmp_path)
    assert problems and excinfo.value.message in problems[0], (excinfo.value.message, problems)
    assert len(problems) == bad_rows, problems


# --------------------------------------------------------------------------- translation files


def test_translation_files_with_unequal_line_counts(tmp_path):
    write(tmp_path / "train.en", "a dog\na cat\na man\n")
    write(tmp_path / "train.de", "ein Hund\neine Katze\n")
    with pytest.raises(AlignmentError) as excinfo:
        read(tmp_path / "train.{lang}", langs=["en", "de"])
    text = error_text(excinfo)
    assert "train.en: 3 lines" in text and "train.de: 2 lines" in text
    assert "diverge at line 3" in text


def test_translation_files_aligned_read_in_lockstep(tmp_path):
    write(tmp_path / "train.en", "a dog\na cat\n")
    write(tmp_path / "train.de", "ein Hund\neine Katze\n")
    table = read(tmp_path / "train.{lang}", langs=["en", "de"])
    assert table.rows == [{"en": "a dog", "de": "ein Hund"}, {"en": "a cat", "de": "eine Katze"}]


def test_translation_file_missing(tmp_path):
    write(tmp_path / "train.en", "a dog\n")
    with pytest.raises(DataFileError) as excinfo:
        read(tmp_path / "train.{lang}", langs=["en", "de"])
    assert "train.de: file not found" in error_text(excinfo)


# --------------------------------------------------------------------------- truncation


def test_long_inputs_truncated_with_one_counted_warning(tmp_path, tiny_model_dir, caplog):
    from finetune.models.loading import load_tokenizer

    train = write(tmp_path / "train.csv", GOOD_ROWS)
    task = make_task(recipe_for(train), FAMILIES["bert"])
    task.tokenizer = load_tokenizer(str(tiny_model_dir("bert")))
    examples = splits(train).train
    long = "good film " * 20
    examples[0].source = examples[2].source = long
    task.fit(examples)
    with caplog.at_level(logging.WARNING):
        features = task.encode(examples, training=True)
    warnings = [r.getMessage() for r in caplog.records if "truncated" in r.getMessage()]
    assert warnings == [
        "2 of 4 inputs longer than 8 tokens were truncated (raise train.max_length)"
    ]
    assert max(f["length"] for f in features) == 8


# --------------------------------------------------------------------------- CLI


def test_bad_data_through_the_cli_exits_2_without_traceback(tmp_path, runner):
    path = write(tmp_path / "train.csv", "text\tlabel\ngood\t1\n")
    data = {
        "model": {"name": str(bert_model_dir(tmp_path))},
        "task": {"type": "classification"},
        "data": {"train": str(path)},
        "method": {"name": "lora"},
    }
    result = runner.invoke(app, ["validate", str(write_recipe(tmp_path / "r.yaml", data))])
    assert result.exit_code == 2 and "looks tab-separated" in result.output
    assert "Traceback" not in result.output


def test_every_data_error_is_a_data_error():
    for cls in (DataFileError, DataFormatError, DataColumnError, DataValueError, LabelError):
        assert issubclass(cls, DataError) and cls.code.startswith("E2")


# --------------------------------------------------------------------------- huge files

STREAM_CHECK = textwrap.dedent(
    """
    import json, resource, sys
    from pathlib import Path

    cap = 1536 * 2**20  # far below the file size: loading it whole would fail
    resource.setrlimit(resource.RLIMIT_AS, (cap, cap))
    from finetune.data.readers import peek_columns, read_local
    from finetune.errors import DataFormatError
    from finetune.recipe.schema import LocalSource

    def rchar():
        for line in Path("/proc/self/io").read_text().splitlines():
            if line.startswith("rchar:"):
                return int(line.split()[1])

    source = LocalSource(path=sys.argv[1])
    out = {}
    before = rchar()
    out["columns"] = peek_columns(source, None, [])
    out["peek_bytes"] = rchar() - before
    before = rchar()
    table = read_local(source, None, limit=10)
    out["rows"], out["last"] = len(table), table.where(9)
    out["read_bytes"] = rchar() - before
    try:
        read_local(source, None)
    except DataFormatError as exc:
        out["full"] = exc.message
    print(json.dumps(out))
    """
)


def test_multi_gb_file_is_streamed_not_loaded(tmp_path):
    """A 4 GiB (sparse) csv: validate reads its header, max_train_samples reads 10 rows.

    Run under a 1.5 GiB address-space cap, so a reader that slurps the file fails loudly here
    instead of eating the machine; /proc/self/io counts the bytes actually read.
    """
    path = tmp_path / "huge.csv"
    with path.open("wb") as handle:
        handle.write(b"text,label\n")
        for i in range(1000):
            handle.write(b"row %d was good,%d\n" % (i, i % 2))
        handle.truncate(4 * 2**30)  # the rest is a hole: no disk used, no line breaks
    proc = subprocess.run(
        [sys.executable, "-c", STREAM_CHECK, str(path)],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    out = json.loads(proc.stdout)
    assert out["columns"] == ["text", "label"]
    assert out["peek_bytes"] < 1024 * 1024
    assert out["rows"] == 10 and out["last"].endswith("huge.csv line 11")
    assert out["read_bytes"] < 1024 * 1024
    # no limit: the reader reaches the hole and says it is not text, after at most ~64 MB
    assert "line 1002: longer than 64 MB" in out["full"]
