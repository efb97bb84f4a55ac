"""`finetune init DATA_FILE`: the recipe guessed from csv/tsv/jsonl/aligned files, then run."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from finetune.cli import app
from finetune.methods import METHODS
from finetune.setup.checks import check_recipe
from tests.conftest import write_csv
from tests.generation_data import summary_rows, translation_rows, write_aligned, write_jsonl
from tests.tiny_models import sentiment_rows


@pytest.fixture()
def here(tmp_path, monkeypatch):
    """Run in a scratch directory: `init` writes <data>.yaml and `run` runs/<data>/ there."""
    monkeypatch.chdir(tmp_path)
    return tmp_path


def _init(runner, *args: str, code: int = 0):
    result = runner.invoke(app, ["init", *args])
    assert result.exit_code == code, result.output
    return result


def _recipe(path: Path) -> dict:
    text = path.read_text(encoding="utf-8")
    lines = text.splitlines()
    assert lines[0].startswith("# ") and lines[1].startswith("# finetune run ")
    assert lines[1].endswith(path.name)
    recipe, problems = check_recipe(path)  # what `finetune validate` says about it
    assert recipe is not None and not problems, [p.render() for p in problems]
    return yaml.safe_load(text)


def test_csv_text_label_becomes_classification_with_dev_split(here, runner):
    rows = [{"id": i, **row} for i, row in enumerate(sentiment_rows(40, seed=1))]
    write_csv(here / "data.csv", rows)
    write_csv(here / "dev.csv", rows[:8])
    result = _init(runner, "data.csv")
    assert "next: finetune run data.yaml" in result.output
    data = _recipe(here / "data.yaml")
    assert data["model"] == {"name": "bundled:minilm-l6"}
    assert data["task"] == {"type": "classification", "text": "text", "label": "label"}
    assert data["data"] == {"train": "data.csv", "eval": "dev.csv"}
    assert data["method"] == {"name": "lora"}
    assert "lr" not in data["train"]  # the method's default_lr applies
    assert data["output"] == {"dir": "runs/data"}
    text = (here / "data.yaml").read_text()
    assert "2 labels in 40 rows: 0, 1" in text
    assert "# lr: 2.0e-3" in text and "# r: 8" in text  # commented defaults, valid YAML


def test_tsv_dialogue_summary_becomes_summarization_with_held_out_eval(here, runner):
    write_csv(here / "dialogs.tsv", summary_rows(30, seed=1), delimiter="\t")
    _init(runner, "dialogs.tsv", "--method", "ia3")
    data = _recipe(here / "dialogs.yaml")
    assert data["task"] == {"type": "summarization", "text": "dialogue", "summary": "summary"}
    assert data["data"] == {"train": "dialogs.tsv", "eval_fraction": 0.1}
    assert data["method"] == {"name": "ia3"}
    text = (here / "dialogs.yaml").read_text()
    assert "seq2seq model id" in text  # the default model's comment says what to use instead


def test_jsonl_language_columns_become_translation_and_test_file_is_eval(here, runner):
    write_jsonl(here / "corpus" / "train.jsonl", translation_rows(20, seed=1))
    write_jsonl(here / "corpus" / "test.jsonl", translation_rows(5, seed=2))
    _init(runner, "corpus/train.jsonl")
    data = _recipe(here / "corpus.yaml")  # train.jsonl: the recipe is named after its folder
    assert data["task"] == {"type": "translation", "source_lang": "en", "target_lang": "de"}
    assert data["data"] == {"train": "corpus/train.jsonl", "eval": "corpus/test.jsonl"}


def test_dict_column_becomes_translation_column(here, runner):
    rows = [{"id": i, "translation": row} for i, row in enumerate(translation_rows(20, seed=1))]
    write_jsonl(here / "wmt.jsonl", rows)
    _init(runner, "wmt.jsonl")
    data = _recipe(here / "wmt.yaml")
    assert data["task"] == {
        "type": "translation",
        "source_lang": "en",
        "target_lang": "de",
        "translation_column": "translation",
    }


def test_aligned_text_files_become_translation(here, runner):
    rows = translation_rows(20, seed=1)
    write_aligned(here / "mt", "train", rows)
    write_aligned(here / "mt", "valid", rows[:5])
    write_aligned(here / "mt", "test", rows[5:9])
    _init(runner, "mt/train.de", "--out", "recipes/mt.yaml")  # the named file is the source
    data = _recipe(here / "recipes" / "mt.yaml")
    assert data["task"] == {"type": "translation", "source_lang": "de", "target_lang": "en"}
    absolute = str((here / "mt").resolve())
    assert data["data"] == {
        "train": f"{absolute}/train.{{lang}}",
        "eval": f"{absolute}/valid.{{lang}}",
        "test": f"{absolute}/test.{{lang}}",
    }


def test_an_unlabelled_test_file_is_left_out(here, runner):
    """GLUE ships test.tsv without labels: init used to write no recipe at all for it."""
    rows = [
        {"text": f"the film was {'good' if i % 2 else 'bad'} {i}", "label": i % 2}
        for i in range(20)
    ]
    write_csv(here / "glue" / "train.csv", rows)
    write_csv(here / "glue" / "dev.csv", rows[:6])
    write_csv(here / "glue" / "test.csv", [{"text": r["text"]} for r in rows[:6]])
    result = _init(runner, "glue/train.csv", "--out", "glue.yaml")
    assert "test.csv left out" in result.output and "label" in result.output
    data = _recipe(here / "glue.yaml")["data"]
    assert data["eval"] == "glue/dev.csv" and "test" not in data


def test_val_files_are_the_eval_split(here, runner):
    """Multi30k, COCO-style sets ship `val.en` / `val.csv`."""
    rows = translation_rows(20, seed=1)
    write_aligned(here / "m30k", "train", rows)
    write_aligned(here / "m30k", "val", rows[:5])
    result = _init(runner, "m30k/train.en", "--out", "m30k.yaml")
    assert "eval: val.{lang}" in result.output
    assert _recipe(here / "m30k.yaml")["data"]["eval"] == "m30k/val.{lang}"


def test_qualified_split_names_are_found(here, runner):
    """Multi30k ships its test sets as `test_2016_flickr.en`, `test_2017_mscoco.en`: the first
    is taken and the note names the others, so the user can switch."""
    rows = translation_rows(20, seed=2)
    write_aligned(here / "m30k", "train", rows)
    write_aligned(here / "m30k", "val", rows[:5])
    write_aligned(here / "m30k", "test_2016_flickr", rows[5:9])
    write_aligned(here / "m30k", "test_2017_mscoco", rows[9:12])
    (here / "m30k" / "test_2018_flickr.en").write_text("only one language\n")  # not a pair
    result = _init(runner, "m30k/train.en", "--out", "m30k.yaml")
    data = _recipe(here / "m30k.yaml")["data"]
    assert data["test"] == "m30k/test_2016_flickr.{lang}"
    assert "also there: test_2017_mscoco.{lang}" in result.output
    assert "test_2018" not in result.output


def test_sentence_pairs_and_string_labels(here, runner):
    labels = ["entailment", "neutral", "contradiction"]
    rows = [
        {
            "premise": f"a man walks in the park {i}",
            "hypothesis": "a man is out",
            "y": labels[i % 3],
        }
        for i in range(30)
    ]
    write_jsonl(here / "nli.jsonl", rows)
    _init(runner, "nli.jsonl", "--label", "y", "--model", "bundled:minilm-l6")
    data = _recipe(here / "nli.yaml")
    assert data["task"] == {
        "type": "classification",
        "text": "premise",
        "text_pair": "hypothesis",
        "label": "y",
    }
    assert (
        "3 labels in 30 rows: contradiction, entailment, neutral" in (here / "nli.yaml").read_text()
    )


def test_ambiguous_text_columns_name_the_columns_and_the_flag(here, runner):
    rows = [
        {
            "title": f"a long title number {i}",
            "description": f"the film was good {i}",
            "label": i % 2,
        }
        for i in range(20)
    ]
    write_csv(here / "reviews.csv", rows)
    result = _init(runner, "reviews.csv", code=2)
    assert "title" in result.output and "description" in result.output
    assert "--text" in result.output and "E207" in result.output
    # the flag to pass, then the others once each (--text-pair among them, --text not again)
    fix = result.output[result.output.index("fix:") :]
    assert fix.count("--text ") + fix.count("--text,") == 1 and "--text-pair" in fix
    assert not (here / "reviews.yaml").exists()
    _init(runner, "reviews.csv", "--text", "description")
    assert _recipe(here / "reviews.yaml")["task"]["text"] == "description"


def test_unknown_task_columns_and_flag_columns_are_refused(here, runner):
    write_csv(here / "numbers.csv", [{"a": i * 0.5, "b": i * 1.5} for i in range(20)])
    result = _init(runner, "numbers.csv", code=2)
    assert "cannot tell the task" in result.output and "--task classification" in result.output
    result = _init(runner, "numbers.csv", "--label", "nope", code=2)
    assert "--label nope" in result.output and "a, b" in result.output


def test_sentence_columns_named_like_labels_are_not_labels(here, runner):
    rows = [{"source": f"a man walks {i}", "target": f"ein mann geht {i}"} for i in range(20)]
    write_csv(here / "pairs.csv", rows)
    result = _init(runner, "pairs.csv", code=2)  # `target` holds sentences: not a label
    assert "cannot tell the task" in result.output and "--source" in result.output
    _init(runner, "pairs.csv", "--source", "source", "--target", "target")
    task = _recipe(here / "pairs.yaml")["task"]
    assert (task["type"], task["source"], task["target"]) == ("translation", "source", "target")


def test_refuses_to_overwrite_without_force(here, runner):
    write_csv(here / "data.csv", sentiment_rows(20, seed=1))
    (here / "data.yaml").write_text("# mine\n")
    result = _init(runner, "data.csv", code=2)
    assert "--force" in result.output
    assert (here / "data.yaml").read_text() == "# mine\n"
    _init(runner, "data.csv", "--force")
    assert _recipe(here / "data.yaml")["task"]["type"] == "classification"


def test_a_recipe_validate_rejects_is_not_written(here, runner):
    write_csv(here / "data.csv", sentiment_rows(20, seed=1))
    result = _init(runner, "data.csv", "--method", "prefix", code=2)  # prefix: no classification
    assert "method.name" in result.output and "data.yaml" in result.output
    assert not (here / "data.yaml").exists() and not list(here.glob(".*init*"))


def test_init_then_run_trains_an_adapter(here, runner, tiny_model_dir):
    write_csv(here / "data.csv", sentiment_rows(96, seed=1))
    write_csv(here / "dev.csv", sentiment_rows(24, seed=2))
    _init(runner, "data.csv", "--model", str(tiny_model_dir("bert")))
    result = runner.invoke(app, ["run", "data.yaml", "--no-progress"])
    assert result.exit_code == 0, result.output
    out = here / "runs" / "data"
    assert any((out / "adapter").glob("*.safetensors"))
    assert json.loads((out / "metrics.json").read_text())["samples"] == 24
    assert json.loads((out / "run.json").read_text())["lr"] == METHODS["lora"].default_lr


def test_init_then_run_translation_on_t5(here, runner, tiny_model_dir):
    write_jsonl(here / "pairs.jsonl", translation_rows(40, seed=1))
    _init(runner, "pairs.jsonl", "--model", str(tiny_model_dir("t5")))
    result = runner.invoke(app, ["run", "pairs.yaml", "--no-progress", "train.max_length=32"])
    assert result.exit_code == 0, result.output
    metrics = json.loads((here / "runs" / "pairs" / "metrics.json").read_text())
    assert "bleu" in metrics and metrics["samples"] == 4  # 10% of 40 rows held out


# --------------------------------------------------------------------------- length limits


def _long_dialogues(n: int, words: int) -> list[dict]:
    """Dialogues of about `words` tiny-vocabulary words each (a tiny tokenizer's word is one
    token), each with a short summary."""
    rows = summary_rows(n * 40, seed=3)
    out = []
    for i in range(n):
        text = " ".join(r["dialogue"] for r in rows[i * 40 : (i + 1) * 40]).split()
        out.append({"dialogue": " ".join(text[: words + i]), "summary": rows[i]["summary"]})
    return out


def test_init_sets_max_length_from_the_rows_as_the_task_encodes_them(here, runner, tiny_model_dir):
    from transformers import AutoTokenizer

    write_jsonl(here / "dialogs.jsonl", _long_dialogues(24, words=300))
    model = tiny_model_dir("gpt2")
    result = _init(runner, "dialogs.jsonl", "--model", str(model))
    train = _recipe(here / "dialogs.yaml")["train"]
    tok = AutoTokenizer.from_pretrained(model)
    longest = max(len(tok(r["dialogue"])["input_ids"]) for r in _long_dialogues(24, 300))
    # the prompt holds the whole dialogue plus its separator: nothing of it is cut
    # (+ a few tokens of the prompt's separator)
    assert train["max_length"] % 64 == 0 and longest < train["max_length"] <= longest + 72
    assert train["max_target_length"] == 128  # short summaries keep the default
    assert f"train.max_length {train['max_length']}" in result.output
    text = (here / "dialogs.yaml").read_text()
    assert "in 24 sampled rows" in text
    run = runner.invoke(app, ["run", "dialogs.yaml", "--no-progress", "train.epochs=1"])
    assert run.exit_code == 0, run.output
    assert "inputs longer than" not in run.output  # `run` truncated none of them


def test_init_keeps_128_for_short_texts_and_caps_at_the_model_positions(
    here, runner, tiny_model_dir
):
    write_csv(here / "short.csv", sentiment_rows(40, seed=1))
    _init(runner, "short.csv", "--model", str(tiny_model_dir("bert")))
    assert _recipe(here / "short.yaml")["train"]["max_length"] == 128  # never shortened
    long = [{"text": r["dialogue"], "label": i % 2} for i, r in enumerate(_long_dialogues(20, 400))]
    write_csv(here / "long.csv", long)
    _init(runner, "long.csv", "--model", str(tiny_model_dir("bert")))
    assert _recipe(here / "long.yaml")["train"]["max_length"] == 256  # the tiny BERT's positions
    assert "20 cut at the model's limit" in (here / "long.yaml").read_text()
    # prompt tuning's 20 virtual tokens take positions of their own
    _init(
        runner, "long.csv", "--model", str(tiny_model_dir("bert")), "--method", "prompt", "--force"
    )
    assert _recipe(here / "long.yaml")["train"]["max_length"] == 256 - 20


def test_a_decoders_prompt_and_reply_share_its_positions(here, runner, tiny_model_dir):
    write_jsonl(here / "long.jsonl", _long_dialogues(12, words=700))
    _init(runner, "long.jsonl", "--model", str(tiny_model_dir("gpt2")))  # 512 positions
    train = _recipe(here / "long.yaml")["train"]
    assert train["max_target_length"] == 128
    assert train["max_length"] == 512 - 128  # prompt + reply fit the model


def test_init_without_the_tokenizer_still_writes_the_recipe(here, runner):
    write_csv(here / "data.csv", sentiment_rows(40, seed=1))
    result = _init(runner, "data.csv", "--model", "someone/bert-not-downloaded")
    assert "lengths: not measured" in result.output  # offline: the Hub id cannot load
    assert _recipe(here / "data.yaml")["train"]["max_length"] == 128


def test_init_measures_an_encoder_decoders_inputs_and_targets_apart(here, runner, tiny_model_dir):
    from transformers import AutoTokenizer

    rows = [{"dialogue": r["dialogue"], "summary": r["dialogue"]} for r in _long_dialogues(12, 200)]
    write_jsonl(here / "echo.jsonl", rows)  # targets as long as the inputs
    model = tiny_model_dir("t5")
    _init(runner, "echo.jsonl", "--model", str(model))
    train = _recipe(here / "echo.yaml")["train"]
    tok = AutoTokenizer.from_pretrained(model)
    longest = max(len(tok(r["dialogue"])["input_ids"]) for r in rows)  # with its </s>
    assert longest <= train["max_length"] < longest + 64
    assert longest <= train["max_target_length"] < longest + 64
