"""`finetune init` on files as their authors ship them: GLUE's CoLA (no header), MRPC (a BOM,
`#1 String` / `#2 String`, quotes as text) and STS-B (a float score: regression), then the
cases it cannot tell, which exit 2 naming the flag to pass."""

from __future__ import annotations

import json

import pytest
import yaml

from finetune.cli import app
from finetune.recipe.guess_layout import header_votes
from tests.conftest import SHARED_DATA, write_csv
from tests.regression_data import score_rows
from tests.test_init import _init, _recipe, here  # noqa: F401 (fixture)

GLUE = SHARED_DATA / "glue"
needs_glue = pytest.mark.skipif(not GLUE.is_dir(), reason="../shared/data/glue is not here")


@needs_glue
def test_cola_no_header_becomes_named_columns(here, runner):  # noqa: F811
    result = _init(runner, str(GLUE / "CoLA" / "train.tsv"))
    assert "CoLA.yaml" in result.output  # train.tsv: named after its folder
    assert "lengths: train.max_length 128 (longest" in result.output  # measured by the names
    data = _recipe(here / "CoLA.yaml")  # what `finetune validate` accepts
    assert data["task"] == {"type": "classification", "text": "text", "label": "label"}
    train = data["data"]["train"]
    assert train == {
        "path": str(GLUE / "CoLA" / "train.tsv"),
        "header": False,
        "columns": ["column1", "label", "column3", "text"],
        "quoting": "none",  # a bare quote in a sentence further down the file
    }
    assert data["data"]["eval"] == {**train, "path": str(GLUE / "CoLA" / "dev.tsv")}
    text = (here / "CoLA.yaml").read_text()
    assert "line 1 is data" in text and "quotes are text here (line 3057" in text


@needs_glue
def test_mrpc_bom_header_and_numbered_pair(here, runner):  # noqa: F811
    result = _init(runner, str(GLUE / "MRPC" / "train.tsv"), "--out", "mrpc.yaml")
    assert "(#1 String + #2 String -> Quality, 2 labels)" in result.output
    data = _recipe(here / "mrpc.yaml")
    assert data["task"] == {
        "type": "classification",
        "text": "#1 String",
        "text_pair": "#2 String",
        "label": "Quality",  # read past the BOM
    }
    assert data["data"]["train"] == {"path": str(GLUE / "MRPC" / "train.tsv"), "quoting": "none"}


@needs_glue
def test_stsb_score_becomes_regression(here, runner):  # noqa: F811
    result = _init(runner, str(GLUE / "STS-B" / "train.tsv"), "--out", "stsb.yaml")
    assert "regression" in result.output
    data = _recipe(here / "stsb.yaml")
    assert data["task"] == {
        "type": "regression",
        "text": "sentence1",
        "text_pair": "sentence2",
        "label": "score",
    }
    assert data["data"]["eval"] == {"path": str(GLUE / "STS-B" / "dev.tsv"), "quoting": "none"}
    assert "target numbers, 0 to 5" in (here / "stsb.yaml").read_text()
    result = runner.invoke(app, ["validate", "stsb.yaml"])  # every row's score is a number
    assert result.exit_code == 0, result.output


def test_header_votes():
    rows = [["gj04", "0", "*", "a"], ["gj04", "1", "", "b"]]
    assert header_votes(["gj04", "1", "", "The sailors rode the breeze."], rows) == (0, 4)
    assert header_votes(["source", "label", "mark", "sentence"], rows) == (1, 0)
    assert header_votes(["", "text"], [["0", "a b"], ["1", "c d"]]) == (1, 0)  # pandas index


def test_unclear_header_and_quotes_name_the_flags(here, runner):  # noqa: F811
    # line 1: a name over numbers ("label") and a sentence ("...four words or more"): both ways
    lines = ["the first line is long\tlabel", "a b\t0", "c d\t1", "e f\t0"]
    (here / "odd.tsv").write_text("\n".join(lines) + "\n")
    result = _init(runner, "odd.tsv", code=2)
    assert "--header" in result.output and "--no-header" in result.output
    assert "E207" in result.output and not (here / "odd.yaml").exists()
    _init(runner, "odd.tsv", "--header", "--text", "the first line is long")
    assert "header" not in _recipe(here / "odd.yaml")["data"]["train"]
    # a quote that opens a field over the delimiter: neither reading is clean
    (here / "broken.csv").write_text('text,label\n"a, b,0\nc d,1\ne f,0\n')
    result = _init(runner, "broken.csv", code=2)
    assert "--quoting none" in result.output and "broken.csv line" in result.output


def test_regression_from_numbers_and_refusals(here, runner):  # noqa: F811
    rows = [{"id": i, **row} for i, row in enumerate(score_rows(30, seed=1))]
    (here / "s.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    _init(runner, "s.jsonl")
    task = _recipe(here / "s.yaml")["task"]
    assert task == {"type": "regression", "text": "text", "label": "score"}
    write_csv(here / "labels.csv", [{"text": "a b c", "label": i % 2} for i in range(20)])
    result = _init(runner, "labels.csv", "--task", "regression", code=2)
    assert "--label" in result.output and "target numbers" in result.output
    result = _init(runner, "s.jsonl", "--header", "--out", "x.yaml", code=2)
    assert "csv and tsv" in result.output


def test_headerless_regression_names_the_score(here, runner):  # noqa: F811
    lines = [f"{r['text']}\t{r['score']}" for r in score_rows(30, seed=2)]
    (here / "plain.tsv").write_text("\n".join(lines) + "\n")
    _init(runner, "plain.tsv")
    data = yaml.safe_load((here / "plain.yaml").read_text())
    assert data["task"] == {"type": "regression", "text": "text", "label": "label"}
    assert data["data"]["train"]["columns"] == ["text", "label"]
    assert data["data"]["train"]["header"] is False
