"""Issue #9 findings 25, 26, 27, 14 and 19: real data files, `validate`, `compare`, `predict`.

Finding 25: a TSV written by pandas (RFC-4180 quoting) must be read, not refused.
Finding 26: `validate` must parse every row (streamed) and report every bad row at once.
Finding 27: `compare` must show why a method failed and where its log is.
Finding 14: `compare` must write its report for a recipe without eval data.
Finding 19: `predict` must choose its device as `eval` does.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest

from finetune.cli import app
from finetune.commands.build import load_splits, make_task
from finetune.commands.validate import check_recipe
from finetune.data.readers import read_local
from finetune.errors import DataFormatError
from finetune.models import FAMILIES
from finetune.recipe.schema import LocalSource, Recipe
from tests.conftest import REPO, SHARED_DATA, classification_recipe, write_csv, write_recipe
from tests.tiny_models import sentiment_rows

# texts a pandas user really has: quotes, a leading newline, a tab, a quote-only field
AWKWARD = [
    'What do I do with my "decline" message?',
    "\nHow do I start a question on a new line?",
    "a question\twith a tab",
    '"',
    'ends with a quote"',
]


def pandas_tsv(path: Path, n: int = 300, awkward_at: int = 270) -> Path:
    """n rows, the awkward texts from row `awkward_at` on (line ~273 as in the issue)."""
    import pandas as pd

    texts = [f"plain sentence number {i}" for i in range(n)]
    texts[awkward_at : awkward_at + len(AWKWARD)] = AWKWARD
    frame = pd.DataFrame({"text": texts, "label": [i % 2 for i in range(n)]})
    frame.to_csv(path, sep="\t", index=False)
    return path


def bert_model_dir(root: Path) -> Path:
    (root / "model").mkdir(parents=True, exist_ok=True)
    (root / "model" / "config.json").write_text(json.dumps({"model_type": "bert"}))
    return root / "model"


def recipe_file(root: Path, train: Path | dict, **extra: Any) -> Path:
    data = {
        "model": {"name": str(bert_model_dir(root))},
        "task": {"type": "classification"},
        "data": {"train": train if isinstance(train, dict) else str(train)},
        "method": {"name": "lora"},
        **extra,
    }
    return write_recipe(root / "r.yaml", data)


def texts_of(path: Path, **source: Any) -> list[str]:
    return [row["text"] for row in read_local(LocalSource(path=str(path), **source), None).rows]


# --------------------------------------------------------------------------- finding 25


def test_pandas_tsv_with_quotes_tabs_and_newlines_is_read_exactly(tmp_path):
    """Finding 25: RFC-4180 quoting in a TSV is read as in a CSV; every text round-trips."""
    import pandas as pd

    path = pandas_tsv(tmp_path / "train.tsv")
    raw = path.read_text(encoding="utf-8")
    assert '"What do I do with my ""decline"" message?"' in raw  # pandas quoted it
    table = read_local(LocalSource(path=str(path)), None)
    expected = pd.read_csv(path, sep="\t", keep_default_na=False)["text"].tolist()
    assert [row["text"] for row in table.rows] == expected
    assert [row["text"] for row in table.rows[270:275]] == AWKWARD
    # line numbers still name the physical line (the newline field spans two lines)
    assert table.where(270).endswith("line 272") and table.where(272).endswith("line 275")


def test_pandas_tsv_runs_through_the_classification_task(tmp_path):
    """Finding 25: the data step of `run` (load_splits) accepts the pandas file."""
    path = pandas_tsv(tmp_path / "train.tsv")
    recipe = Recipe.model_validate(
        {
            "model": {"name": "bert-base-uncased"},
            "task": {"type": "classification"},
            "data": {"train": str(path)},
            "method": {"name": "lora"},
        }
    )
    task = make_task(recipe, FAMILIES["bert"])
    train = load_splits(task, recipe, tmp_path).train
    assert len(train) == 300 and [e.source for e in train[270:275]] == AWKWARD


def test_quoted_csv_and_tsv_read_the_same(tmp_path):
    """Finding 25: one quoting rule for both delimiters."""
    rows = [{"text": t, "label": 1} for t in AWKWARD] + [{"text": "plain", "label": 0}]
    csv_path = write_csv(tmp_path / "a.csv", rows)
    tsv_path = write_csv(tmp_path / "a.tsv", rows, delimiter="\t")
    assert texts_of(csv_path) == texts_of(tsv_path) == [r["text"] for r in rows]


GLUE_STYLE = 'sentence\tlabel\n"Great" movie , really\t1\nit is 5" wide\t0\n"quoted whole"\t1\n'


def test_glue_style_stray_quotes_are_text_with_quoting_none(tmp_path):
    """Finding 25: `quoting: none` keeps every quote as text (GLUE-style files)."""
    path = tmp_path / "train.tsv"
    path.write_text(GLUE_STYLE.replace("sentence", "text"), encoding="utf-8")
    assert texts_of(path, quoting="none") == [
        '"Great" movie , really',
        'it is 5" wide',
        '"quoted whole"',
    ]


@pytest.mark.parametrize(
    "body, line",
    [
        ('"Great" movie\t1\n', 2),  # a quote that opens a field but does not end it
        ('fine\t1\nit is 5" wide\t0\n', 3),  # a quote inside an unquoted field
    ],
)
def test_stray_quote_is_refused_not_turned_into_data(tmp_path, body, line):
    """Finding 25: by default a quote is RFC-4180 syntax or an error naming `quoting: none`."""
    path = tmp_path / "train.tsv"
    path.write_text("text\tlabel\n" + body, encoding="utf-8")
    with pytest.raises(DataFormatError) as excinfo:
        read_local(LocalSource(path=str(path)), None)
    text = excinfo.value.render()
    assert f"train.tsv line {line}" in text and "quoting: none" in text


@pytest.mark.parametrize("root", [REPO / "recipes" / "data" / "sst2", SHARED_DATA / "sst2"])
def test_sst2_files_read_the_same_with_and_without_quoting(root):
    """Finding 25: the GLUE SST-2 files keep working under the new default."""
    path = root / "dev.tsv"
    if not path.exists():
        pytest.skip(f"{path} not present")
    default = read_local(LocalSource(path=str(path)), None)
    none = read_local(LocalSource(path=str(path), quoting="none"), None)
    assert default.rows == none.rows and len(default) == 872


def test_quoting_option_in_recipe_and_validate(tmp_path):
    """Finding 25: `quoting` is a data-source key; validate reads the file with it."""
    path = tmp_path / "train.tsv"
    path.write_text(GLUE_STYLE.replace("sentence", "text"), encoding="utf-8")
    recipe, problems = check_recipe(recipe_file(tmp_path, {"path": str(path), "quoting": "none"}))
    assert problems == [] and recipe.data.train.quoting == "none"
    _, problems = check_recipe(recipe_file(tmp_path, path), scan_rows=True)
    text = "\n".join(p.render() for p in problems)
    assert len(problems) == 2 and "quoting: none" in text
    assert "train.tsv line 2: text follows the closing quote" in text
    assert "train.tsv line 3: a quote inside a field that does not start with one" in text


# --------------------------------------------------------------------------- finding 26


def bad_rows_file(path: Path, bad_lines: list[int], n: int = 300) -> Path:
    """A comma-separated file whose listed (1-based) lines have one field too many."""
    lines = ["text,label"]
    for lineno in range(2, n + 2):
        extra = ",extra" if lineno in bad_lines else ""
        lines.append(f"row {lineno} text{extra},{lineno % 2}")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def test_validate_finds_a_bad_row_deep_in_the_file(tmp_path, runner):
    """Finding 26: a bad row at line 273 is reported by `validate`, not first by `run`."""
    path = bad_rows_file(tmp_path / "train.csv", [273])
    recipe = recipe_file(tmp_path, path)
    result = runner.invoke(app, ["validate", str(recipe)])
    assert result.exit_code == 2, result.output
    assert "train.csv line 273: 3 fields, header has 2" in result.output


def test_validate_reports_every_bad_row_at_once(tmp_path):
    """Finding 26: two bad rows (and a bad eval file) are all reported in one pass."""
    train = bad_rows_file(tmp_path / "train.csv", [5, 273])
    dev = tmp_path / "dev.jsonl"
    dev.write_text('{"text": "a", "label": 1}\nnot json\n{"text": "b", "label": 0}\n[1]\n')
    recipe = recipe_file(tmp_path, train)
    data = json.loads(json.dumps(__import__("yaml").safe_load(recipe.read_text())))
    data["data"]["eval"] = str(dev)
    recipe = write_recipe(recipe, data)
    _, problems = check_recipe(recipe, scan_rows=True)
    text = "\n".join(p.render() for p in problems)
    for expected in (
        "train.csv line 5: 3 fields",
        "train.csv line 273: 3 fields",
        "dev.jsonl line 2 column 1: invalid JSON",
        "dev.jsonl line 4: a JSON list, not an object",
    ):
        assert expected in text, text
    assert len(problems) == 4


def test_validate_caps_the_listing_but_counts_every_bad_row(tmp_path):
    """Finding 26: a file of bad rows lists the first ones and counts the rest."""
    path = bad_rows_file(tmp_path / "train.csv", list(range(2, 302)))
    _, problems = check_recipe(recipe_file(tmp_path, path), scan_rows=True)
    text = "\n".join(p.render() for p in problems)
    assert "line 2: 3 fields" in text and "300 bad rows" in text
    assert len(problems) <= 25


def test_validate_quick_reads_only_the_header(tmp_path, runner):
    """Finding 26: `validate --quick` keeps the header-only check."""
    path = bad_rows_file(tmp_path / "train.csv", [273])
    recipe = recipe_file(tmp_path, path)
    result = runner.invoke(app, ["validate", "--quick", str(recipe)])
    assert result.exit_code == 0, result.output


SCAN_CHECK = textwrap.dedent(
    """
    import json, resource, sys
    cap = 1536 * 2**20  # far below the file size: loading it would fail
    resource.setrlimit(resource.RLIMIT_AS, (cap, cap))
    from pathlib import Path
    from finetune.data.scan import scan_local
    from finetune.recipe.schema import LocalSource

    scan = scan_local(LocalSource(path=sys.argv[1]), None, [])
    print(json.dumps({"rows": scan.rows, "problems": [p.message for p in scan.problems]}))
    """
)


def test_full_validate_of_a_huge_file_streams_in_constant_memory(tmp_path):
    """Finding 26: the full scan holds no rows; a 4 GiB sparse file stays cheap in memory."""
    path = tmp_path / "huge.csv"
    with path.open("wb") as handle:
        handle.write(b"text,label\n")
        for i in range(1000):
            extra = b",x" if i == 500 else b""
            handle.write(b"row %d%s,%d\n" % (i, extra, i % 2))
        handle.truncate(4 * 2**30)
    proc = subprocess.run(
        [sys.executable, "-c", SCAN_CHECK, str(path)],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    out = json.loads(proc.stdout)
    assert out["rows"] == 999
    assert any("line 502: 3 fields" in p for p in out["problems"])
    assert any("line 1002: longer than 64 MB" in p for p in out["problems"])


# --------------------------------------------------------------------------- findings 27 and 14


def test_compare_row_shows_the_error_and_the_failed_runs_log(tmp_path, runner, tiny_model_dir):
    """Finding 27: a failed method's row names the error's first line and its log file."""
    train = bad_rows_file(tmp_path / "data" / "train.csv", [273])
    dev = write_csv(tmp_path / "data" / "dev.csv", sentiment_rows(8, seed=2))
    recipe = write_recipe(
        tmp_path / "r.yaml",
        classification_recipe(tiny_model_dir("bert"), train, dev, tmp_path / "o", {"name": "lora"}),
    )
    out = tmp_path / "cmp"
    result = runner.invoke(app, ["compare", str(recipe), "--methods", "lora", "--out", str(out)])
    assert result.exit_code == 0, result.output
    (row,) = json.loads((out / "report.json").read_text())
    assert row["status"].startswith("failed: ")
    assert "train.csv line 273: 3 fields, header has 2" in row["status"]
    log = Path(row["log"])
    assert log.is_file() and "line 273" in log.read_text()
    table = (out / "report.md").read_text()
    assert "line 273: 3 fields" in table and str(log) in table


def test_compare_without_eval_data_writes_the_report(tmp_path, runner, tiny_model_dir):
    """Finding 14: no eval data -> the quality column says so; every report file is written."""
    train = write_csv(tmp_path / "data" / "train.csv", sentiment_rows(24, seed=1))
    data = classification_recipe(
        tiny_model_dir("bert"), train, train, tmp_path / "o", {"name": "lora"}, epochs=1
    )
    del data["data"]["eval"]
    recipe = write_recipe(tmp_path / "r.yaml", data)
    out = tmp_path / "cmp"
    result = runner.invoke(app, ["compare", str(recipe), "--methods", "lora", "--out", str(out)])
    assert result.exit_code == 0, result.output
    (row,) = json.loads((out / "report.json").read_text())
    assert row["status"] == "ok" and row["quality"] is None and row["trainable"] > 0
    lora_row = next(r for r in (out / "report.md").read_text().splitlines() if "| `lora` |" in r)
    assert "| no eval data |" in lora_row  # the quality cell (after the method's lr)
    assert (out / "report.csv").exists() and (out / "report.png").exists()


# --------------------------------------------------------------------------- finding 19


def test_predict_chooses_its_device_as_eval_does(tmp_path, runner, tiny_model_dir, monkeypatch):
    """Finding 19: predict and eval both build their Accelerator from the same GPU check."""
    import accelerate

    import finetune.commands.build as build
    import finetune.commands.evaluate as runs

    train = write_csv(tmp_path / "data" / "train.csv", sentiment_rows(24, seed=1))
    dev = write_csv(tmp_path / "data" / "dev.csv", sentiment_rows(8, seed=2))
    out = tmp_path / "run"
    recipe = write_recipe(
        tmp_path / "r.yaml",
        classification_recipe(tiny_model_dir("bert"), train, dev, out, {"name": "lora"}, epochs=1),
    )
    result = runner.invoke(app, ["run", str(recipe), "--no-progress"])
    assert result.exit_code == 0, result.output
    baseline = runs.predict_texts(out, ["good movie", "bad film"])

    requested: list[bool] = []
    real = accelerate.Accelerator

    def spy(*args: Any, cpu: bool = False, **kwargs: Any) -> Any:
        requested.append(cpu)
        return real(*args, cpu=True, **kwargs)  # this test machine may have no GPU

    monkeypatch.setattr(accelerate, "Accelerator", spy)
    monkeypatch.setattr(build, "cuda_available", lambda: True)  # "a GPU is available"
    records = runs.predict_texts(out, ["good movie", "bad film"])
    assert requested == [False], "predict did not ask for the GPU that eval would use"
    runs.evaluate_run(out)
    assert requested == [False, False]
    assert records == baseline


def test_hub_max_samples_is_a_seeded_random_sample(monkeypatch):
    """Issue #12: `data.max_train_samples` on a Hub split takes a seeded random sample, not the
    first N rows (Hub splits are often sorted by label or source)."""
    import datasets

    from finetune.data.readers import read_hub
    from finetune.data.sources import HubSource

    sorted_split = datasets.Dataset.from_dict(
        {"text": [f"row {i}" for i in range(200)], "label": [0] * 100 + [1] * 100}
    )
    monkeypatch.setattr(datasets, "load_dataset", lambda *a, **k: sorted_split)
    source = HubSource(hub="someone/sorted", split="train")
    first = read_hub(source, limit=40, seed=1)
    again = read_hub(source, limit=40, seed=1)
    other = read_hub(source, limit=40, seed=2)
    assert len(first.rows) == 40 and first.rows == again.rows  # deterministic for a seed
    assert {r["label"] for r in first.rows} == {0, 1}  # the head would be all label 0
    assert first.rows != other.rows
    assert len(read_hub(source).rows) == 200  # no limit: the whole split
