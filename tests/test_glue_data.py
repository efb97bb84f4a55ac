"""Data as GLUE ships it: header-less files named by `columns:`, a BOM before the header, quotes
that are text. Every read path is checked: the whole read, the streamed train read, validate's
header check and row scan; then the three GLUE files in ../shared as they are."""

from __future__ import annotations

import pytest

from finetune.cli import app
from finetune.data.readers import peek_columns, read_local
from finetune.data.scan import scan_local
from finetune.data.sources import LocalSource
from finetune.data.stream import row_chunks
from finetune.errors import DataFormatError
from tests.conftest import SHARED_DATA, classification_recipe, write_recipe

GLUE = SHARED_DATA / "glue"
needs_glue = pytest.mark.skipif(not GLUE.is_dir(), reason="../shared/data/glue is not here")
COLA_COLUMNS = ["source", "label", "mark", "sentence"]


def _headerless(tmp_path, name="cola.tsv", bom=True):
    """A CoLA-like file: no header, four fields, a BOM, bare quotes in the text."""
    lines = [
        "gj04\t1\t\tThe sailors rode the breeze clear of the rocks.",
        'gj04\t0\t*\tThe "more" we study verbs the crazier they get.',
        "cj99\t1\t\tIf you had eaten more, you would want less.",
        "cj99\t0\t*\tHe said that that that.",
    ]
    path = tmp_path / name
    path.write_bytes((b"\xef\xbb\xbf" if bom else b"") + ("\n".join(lines) + "\n").encode())
    return path


def _source(path, **options) -> LocalSource:
    return LocalSource.model_validate({"path": str(path), **options})


def _every_read(source):
    """(whole read rows, streamed rows, scanned row count, peeked columns)."""
    whole = read_local(source, None).rows
    streamed = [row for table in row_chunks(source, None, None) for row in table.rows]
    return whole, streamed, scan_local(source, None, []), peek_columns(source, None, [])


def test_headerless_file_is_named_by_columns_on_every_path(tmp_path):
    path = _headerless(tmp_path)
    source = _source(path, header=False, columns=COLA_COLUMNS, quoting="none")
    whole, streamed, scan, columns = _every_read(source)
    assert whole == streamed and len(whole) == 4  # line 1 is data, not a header
    assert whole[0] == {
        "source": "gj04",  # the BOM is not part of the first field
        "label": "1",
        "mark": "",
        "sentence": "The sailors rode the breeze clear of the rocks.",
    }
    assert whole[1]["sentence"] == 'The "more" we study verbs the crazier they get.'
    assert scan.rows == 4 and scan.bad_rows == 0 and scan.columns == COLA_COLUMNS
    assert columns == COLA_COLUMNS
    table = read_local(source, None)
    assert table.where(0).endswith("cola.tsv line 1") and table.where(3).endswith("line 4")


def test_columns_that_do_not_fit_name_the_file_and_line_on_every_path(tmp_path):
    path = _headerless(tmp_path)
    path.write_text(path.read_text(encoding="utf-8-sig") + "cj99\t1\tonly three\n")
    source = _source(path, header=False, columns=COLA_COLUMNS, quoting="none")
    for read in (lambda: read_local(source, None), lambda: list(row_chunks(source, None, None))):
        with pytest.raises(DataFormatError) as err:
            read()
        assert "cola.tsv line 5: 3 fields, but columns: names 4" in err.value.message
    scan = scan_local(source, None, [])
    assert scan.rows == 4 and "cola.tsv line 5: 3 fields" in scan.problems[0].message
    short = _source(path, header=False, columns=COLA_COLUMNS[:3], quoting="none")
    with pytest.raises(DataFormatError, match=r"cola.tsv line 1: line 1 has 4 fields"):
        peek_columns(short, None, [])  # validate --quick reads one line and finds it too


def test_columns_replace_a_header_whose_bom_is_stripped(tmp_path):
    path = tmp_path / "mrpc.tsv"
    path.write_bytes(b"\xef\xbb\xbfQuality\t#1 String\t#2 String\n1\ta b\tc d\n0\te f\tg h\n")
    as_is = _source(path)
    assert peek_columns(as_is, None, []) == ["Quality", "#1 String", "#2 String"]
    assert read_local(as_is, None).rows[0]["Quality"] == "1"
    renamed = _source(path, columns=["label", "text", "pair"])
    whole, streamed, scan, columns = _every_read(renamed)
    assert (
        whole
        == streamed
        == [
            {"label": "1", "text": "a b", "pair": "c d"},
            {"label": "0", "text": "e f", "pair": "g h"},
        ]
    )
    assert columns == ["label", "text", "pair"] and scan.rows == 2
    with pytest.raises(
        DataFormatError, match="line 1: the header has 3 fields and columns: names 2"
    ):
        read_local(_source(path, columns=["label", "text"]), None)


def test_source_options_are_checked_by_the_schema_and_validate(tmp_path, runner, tiny_model_dir):
    with pytest.raises(ValueError, match="header: false needs columns"):
        _source("x.tsv", header=False)
    with pytest.raises(ValueError, match="'a' named twice"):
        _source("x.tsv", columns=["a", " a"])
    jsonl = tmp_path / "rows.jsonl"
    jsonl.write_text('{"text": "a b", "label": 1}\n')
    with pytest.raises(DataFormatError, match="header/columns apply to csv and tsv"):
        read_local(_source(jsonl, columns=["text", "label"]), None)
    data = classification_recipe(
        tiny_model_dir("bert"), jsonl, jsonl, tmp_path / "run", {"name": "lora"}
    )
    data["data"]["train"] = {"path": str(_headerless(tmp_path)), "header": False}
    result = runner.invoke(app, ["validate", str(write_recipe(tmp_path / "r.yaml", data))])
    assert result.exit_code == 2
    assert "data.train" in result.output and "header: false needs columns" in result.output


def test_headerless_recipe_validates_and_trains(tmp_path, runner, tiny_model_dir):
    rows = "".join(
        f"src\t{i % 2}\t\t{'good great film' if i % 2 else 'bad dull plot'} {i}\n"
        for i in range(40)
    )
    (tmp_path / "train.tsv").write_text(rows)
    source = {"header": False, "columns": COLA_COLUMNS, "quoting": "none"}
    data = classification_recipe(
        tiny_model_dir("bert"), tmp_path, tmp_path, tmp_path / "run", {"name": "lora", "r": 4}
    )
    data["task"] = {"type": "classification", "text": "sentence", "label": "label"}
    data["data"] = {
        "train": {"path": str(tmp_path / "train.tsv"), **source},
        "eval": {"path": str(tmp_path / "train.tsv"), **source},
    }
    data["train"].update(epochs=1, max_steps=2)
    recipe = write_recipe(tmp_path / "r.yaml", data)
    for args in (["validate", str(recipe)], ["validate", "--quick", str(recipe)]):
        result = runner.invoke(app, args)
        assert result.exit_code == 0, result.output
    result = runner.invoke(app, ["run", str(recipe), "--no-progress"])
    assert result.exit_code == 0, result.output
    first = (tmp_path / "run" / "predictions.jsonl").read_text().splitlines()[0]
    assert '"reference": "0"' in first and "bad dull plot 0" in first  # line 1 was an example
    other = _headerless(tmp_path, "other.tsv")  # eval --data: read as the run read its data
    result = runner.invoke(app, ["eval", str(tmp_path / "run"), "--data", str(other)])
    assert result.exit_code == 0, result.output
    assert '"samples": 4' in (tmp_path / "run" / "eval_other.json").read_text()


# --------------------------------------------------------------------------- the GLUE files


@needs_glue
@pytest.mark.parametrize(("split", "rows"), [("train", 8551), ("dev", 1043)])
def test_cola_has_no_header_and_four_columns(split, rows):
    source = _source(GLUE / "CoLA" / f"{split}.tsv", header=False, columns=COLA_COLUMNS)
    if split == "train":  # a bare quote in a sentence: RFC 4180 refuses it, naming the line
        with pytest.raises(DataFormatError, match=r"train.tsv line \d+: a quote inside a field"):
            read_local(source, None)
    source = _source(source.path, header=False, columns=COLA_COLUMNS, quoting="none")
    table = read_local(source, None)
    assert len(table) == rows
    assert {row["label"] for row in table.rows} == {"0", "1"}
    assert table.rows[0]["source"] == "gj04" and table.where(0).endswith("line 1")
    assert sum(len(t) for t in row_chunks(source, None, None)) == rows


@needs_glue
@pytest.mark.parametrize(("split", "rows"), [("train", 3667), ("dev", 408)])
def test_mrpc_header_has_a_bom_and_quotes_are_text(split, rows):
    path = GLUE / "MRPC" / f"{split}.tsv"
    assert path.read_bytes().startswith(b"\xef\xbb\xbfQuality\t")  # as GLUE ships it
    source = _source(path, quoting="none")
    assert peek_columns(source, None, []) == [
        "Quality",
        "#1 ID",
        "#2 ID",
        "#1 String",
        "#2 String",
    ]
    table = read_local(source, None)
    assert len(table) == rows and {r["Quality"] for r in table.rows} == {"0", "1"}
    assert any('"' in r["#1 String"] + r["#2 String"] for r in table.rows)  # quotes kept as text
    with pytest.raises(DataFormatError, match=f"{split}.tsv line"):
        read_local(_source(path), None)


@needs_glue
@pytest.mark.parametrize(("split", "rows"), [("train", 5749), ("dev", 1500)])
def test_stsb_has_ten_columns_and_unquoted_text(split, rows):
    source = _source(GLUE / "STS-B" / f"{split}.tsv", quoting="none")
    columns = peek_columns(source, None, [])
    assert len(columns) == 10 and columns[-3:] == ["sentence1", "sentence2", "score"]
    table = read_local(source, None)
    assert len(table) == rows
    scores = [float(row["score"]) for row in table.rows]
    assert min(scores) == 0.0 and max(scores) == 5.0
    scan = scan_local(source, None, [], ["sentence1", "sentence2", "score"])
    assert scan.rows == rows and scan.bad_rows == 0
