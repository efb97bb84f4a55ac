"""`method: none`, the zero-shot baseline: the base model evaluated as it is, with the prompts
and generation settings a trained run uses, saved as a run directory without weights that
`eval` and `predict` rebuild; refused for classification (a fresh head) and by merge / push;
`compare` shows it as the "zero-shot" row that every other row is measured from."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from finetune.cli import app
from finetune.comparison.recipes import baseline_first
from finetune.comparison.report import table
from finetune.comparison.runner import Row
from finetune.methods import METHODS
from finetune.methods.zero_shot import NEW_HEAD
from finetune.recipe.schema import METHOD_NAMES
from tests.conftest import classification_recipe, write_recipe
from tests.generation_data import summary_rows, translation_rows, write_jsonl
from tests.test_generation import generation_recipe
from tests.tiny_chat import END, bigram_chat_model, build_chat_llama

GEN = {"max_new_tokens": 8, "num_beams": 1}
# greedy: "the park", then the end of the turn; without stopping there: "bad bad bad ..."
CHAIN = {"\n": "the", "the": "park", "park": END, END: "bad", "bad": "bad"}


@pytest.fixture(scope="module")
def bigram_dir(tmp_path_factory) -> Path:
    """A tiny ChatML Llama whose greedy reply to any chat prompt is known: "the park"."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = build_chat_llama(tmp_path_factory.mktemp("zero-shot") / "llama")
    tok = AutoTokenizer.from_pretrained(path)
    model = bigram_chat_model(AutoModelForCausalLM.from_pretrained(path), tok, CHAIN)
    model.save_pretrained(path)
    return path


def chat_recipe(model_dir: Path, tmp_path: Path, task: str, method: str = "none") -> dict:
    make = summary_rows if task == "summarization" else translation_rows
    spec = (
        {"type": "summarization", "text": "dialogue", "summary": "summary"}
        if task == "summarization"
        else {"type": "translation", "source_lang": "en", "target_lang": "de"}
    )
    return {
        "model": {"name": str(model_dir)},
        "task": spec,
        "data": {
            "train": str(write_jsonl(tmp_path / "data" / "train.jsonl", make(16, seed=1))),
            "eval": str(write_jsonl(tmp_path / "data" / "dev.jsonl", make(8, seed=2))),
        },
        "method": {"name": method},
        "train": {"epochs": 1, "batch_size": 8, "lr": 5e-3, "max_length": 48, "seed": 0},
        "eval": {"batch_size": 4, "generation": GEN},
        "output": {"dir": str(tmp_path / "run")},
    }


def _invoke(runner, *args):
    result = runner.invoke(app, [str(a) for a in args])
    assert result.exit_code == 0, result.output
    return result


def _jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


# --------------------------------------------------------------------------- run / eval / predict


@pytest.mark.parametrize(
    ("task", "precision"),
    [("summarization", "fp32"), ("translation", "fp32"), ("summarization", "bf16")],
)
def test_zero_shot_run_is_the_untrained_base_and_eval_predict_rebuild_it(
    task, precision, tmp_path, runner, bigram_dir
):
    """Under bf16 the weights are stored in bf16 (a tied head as its own copy) in `run` as in
    `eval` and `predict`: the numbers and texts still agree exactly."""
    out = tmp_path / "run"
    data = chat_recipe(bigram_dir, tmp_path, task)
    data["train"]["precision"] = precision
    _invoke(runner, "run", write_recipe(tmp_path / "r.yaml", data))
    # the chat prompt a trained run uses, and generation stopped at the end of the turn
    saved = _jsonl(out / "predictions.jsonl")
    assert len(saved) == 8 and {r["prediction"] for r in saved} == {"the park"}
    metrics = json.loads((out / "metrics.json").read_text())
    main = "rougeL" if task == "summarization" else "chrf"
    assert metrics[main] > 0 and metrics["samples"] == 8 and metrics["loss"] > 0
    assert metrics["trainable_parameters"] == 0 and metrics["artifact_bytes"] == 0
    assert not any(k.startswith("train_") or k == "steps" for k in metrics)  # nothing trained
    info = json.loads((out / "run.json").read_text())
    assert (info["method"], info["lr"], info["task_state"]["prompt"]) == ("none", None, "chat")
    assert not (out / "adapter").exists() and not (out / "checkpoints").exists()
    assert (out / ".finished").exists()
    card = (out / "README.md").read_text(encoding="utf-8")
    assert "Nothing was trained" in card and "zero-shot" in card
    assert f'AutoModelForCausalLM.from_pretrained("{bigram_dir}")' in card  # the base itself

    # eval rebuilds the run on a fresh base model: the same numbers and texts
    _invoke(runner, "eval", out)
    again = json.loads((out / "eval_eval.json").read_text())
    for key in ("loss", main, "samples"):
        assert again[key] == metrics[key], key
    assert _jsonl(out / "predictions_eval.jsonl") == saved
    result = _invoke(runner, "predict", out, "--text", saved[0]["source"])
    lines = [json.loads(line) for line in result.stdout.splitlines() if line.startswith("{")]
    assert lines[0]["prediction"] == "the park"


def test_zero_shot_metrics_equal_an_untrained_lora_run_at_step_zero(
    tmp_path, runner, tiny_model_dir
):
    """The same evaluation path as training's: a LoRA run's evaluation before any step (B = 0,
    so the model is the base) scores what the zero-shot run scores."""
    zero = generation_recipe(
        tiny_model_dir("gpt2"), "summarization", tmp_path / "a", {"name": "none"}
    )
    _invoke(runner, "run", write_recipe(tmp_path / "a.yaml", zero))
    lora = generation_recipe(
        tiny_model_dir("gpt2"), "summarization", tmp_path / "b", {"name": "lora"}
    )
    lora["train"].update(max_steps=1, lr=1e-12)  # one step that changes nothing measurable
    _invoke(runner, "run", write_recipe(tmp_path / "b.yaml", lora))
    zs = json.loads((tmp_path / "a" / "run" / "metrics.json").read_text())
    trained = json.loads((tmp_path / "b" / "run" / "metrics.json").read_text())
    for key in ("loss", "rouge1", "rougeL", "gen_len_words"):
        assert trained[key] == pytest.approx(zs[key], abs=1e-6), key
    preds = [r["prediction"] for r in _jsonl(tmp_path / "a" / "run" / "predictions.jsonl")]
    assert preds == [r["prediction"] for r in _jsonl(tmp_path / "b" / "run" / "predictions.jsonl")]


def test_predict_shows_the_zero_shot_and_the_trained_reply_side_by_side(
    tmp_path, runner, bigram_dir
):
    zero, lora = tmp_path / "zero", tmp_path / "lora"
    for folder, method in ((zero, "none"), (lora, "lora")):
        data = chat_recipe(bigram_dir, folder, "summarization", method=method)
        data["train"]["max_steps"] = 2
        _invoke(runner, "run", write_recipe(folder / "r.yaml", data))
    result = _invoke(runner, "predict", zero / "run", lora / "run", "--text", "a dog runs")
    lines = [json.loads(line) for line in result.stdout.splitlines() if line.startswith("{")]
    assert [r["run"] for r in lines] == [str(zero / "run"), str(lora / "run")]
    assert lines[0]["prediction"] == "the park"


# --------------------------------------------------------------------------- refusals


def test_classification_is_refused_at_validate_with_the_reason(
    tmp_path, runner, tiny_model_dir, sentiment_files
):
    train, dev = sentiment_files
    data = classification_recipe(
        tiny_model_dir("bert"), train, dev, tmp_path / "run", {"name": "none"}
    )
    recipe = write_recipe(tmp_path / "r.yaml", data)
    for command in ("validate", "run"):
        result = runner.invoke(app, [command, str(recipe)])
        assert result.exit_code == 2, result.output
        assert "method.name" in result.output and "classification head" in result.output
        assert "Traceback" not in result.output
    assert not (tmp_path / "run").exists()
    from finetune.models import FAMILIES

    for family in FAMILIES.values():  # every family: the head is new on each
        assert METHODS["none"].unsupported_reason(family, "classification") == NEW_HEAD


def test_bert2bert_and_missing_eval_data_are_refused(tmp_path, runner, tiny_model_dir):
    data = generation_recipe(tiny_model_dir("bert"), "summarization", tmp_path, {"name": "none"})
    result = runner.invoke(app, ["validate", str(write_recipe(tmp_path / "a.yaml", data))])
    assert result.exit_code == 2 and "cross-attention" in result.output, result.output
    data = generation_recipe(tiny_model_dir("gpt2"), "summarization", tmp_path, {"name": "none"})
    del data["data"]["eval"]
    result = runner.invoke(app, ["validate", str(write_recipe(tmp_path / "b.yaml", data))])
    assert result.exit_code == 2 and "data.eval" in result.output, result.output
    assert "no eval data" in result.output


def test_merge_and_push_refuse_a_zero_shot_run(tmp_path, runner, bigram_dir):
    out = tmp_path / "run"
    _invoke(
        runner,
        "run",
        write_recipe(tmp_path / "r.yaml", chat_recipe(bigram_dir, tmp_path, "summarization")),
    )
    for args in (["merge", out, "--out", tmp_path / "merged"], ["push", out, "--repo-id", "me/x"]):
        result = runner.invoke(app, [str(a) for a in args])
        assert result.exit_code == 2, result.output
        assert "zero-shot run (method none): nothing was trained" in result.output
    assert not (tmp_path / "merged").exists()


# --------------------------------------------------------------------------- compare


def test_compare_shows_the_zero_shot_row_first_and_each_methods_gain(
    tmp_path, runner, bigram_dir, monkeypatch
):
    recipe = write_recipe(
        tmp_path / "r.yaml", chat_recipe(bigram_dir, tmp_path, "summarization", method="lora")
    )
    monkeypatch.chdir(tmp_path)
    out = tmp_path / "cmp"
    _invoke(runner, "compare", recipe, "--methods", "lora,none", "--out", out, "--seeds", "2")
    rows = json.loads((out / "report.json").read_text())
    assert [r["name"] for r in rows] == ["zero-shot", "lora"]  # the baseline first
    zero, lora = rows
    assert zero["method"] == "none" and zero["baseline"] and zero["status"] == "ok"
    assert zero["lr"] is None and zero["runs"] == ["zero-shot"]  # one run whatever --seeds
    assert zero["trainable"] == 0 and zero["train_seconds"] is None
    assert (out / "zero-shot" / "metrics.json").exists() and len(lora["runs"]) == 2
    report = (out / "report.md").read_text()
    assert "| vs zero-shot |" in report and "| `zero-shot` | – |" in report
    assert "base model" in report and f"{lora['quality'] - zero['quality']:+.2f}" in report
    assert "Used: lora 0.005" in report and "none 0.0005" not in report


def test_compare_tune_skips_the_rate_search_of_the_zero_shot_row(
    tmp_path, runner, bigram_dir, monkeypatch
):
    recipe = write_recipe(tmp_path / "r.yaml", chat_recipe(bigram_dir, tmp_path, "summarization"))
    monkeypatch.chdir(tmp_path)
    out = tmp_path / "cmp"
    _invoke(
        runner, "compare", recipe, "--methods", "none", "--out", out, "--tune", "--tune-rates", "3"
    )
    (row,) = json.loads((out / "report.json").read_text())
    assert row["status"] == "ok" and row["search"] == [] and not row["tuned"]
    assert not list((out / "search").glob("none-*"))  # no search run was started


@pytest.mark.parametrize("name", ["smollm2_lora_dialogsum", "smollm2_lora_multi30k"])
def test_smollm2_recipes_validate_as_they_are_and_as_their_zero_shot_baseline(
    name, runner, monkeypatch
):
    from tests.conftest import REPO

    monkeypatch.chdir(REPO)
    for extra in ([], ["--set", "method=none"]):
        result = runner.invoke(app, ["validate", f"recipes/{name}.yaml", *extra])
        assert result.exit_code == 0, result.output


def test_methods_all_holds_the_baseline_for_generation_only():
    everything = list(METHOD_NAMES)
    generation = baseline_first(everything, {"task": {"type": "summarization"}})
    assert generation[0] == "none" and sorted(generation) == sorted(everything)
    classification = baseline_first(everything, {"task": {"type": "classification"}})
    assert "none" not in classification and len(classification) == len(everything) - 1
    # named explicitly, it stays (and its row says why it did not run)
    assert baseline_first(["lora", "none"], {"task": {"type": "classification"}}) == [
        "none",
        "lora",
    ]


def test_report_gain_column_only_with_a_baseline():
    zero = Row(method="none", status="ok", name="zero-shot", quality_metric="rougeL", quality=20.0)
    zero.baseline = True
    lora = Row(method="lora", status="ok", name="lora", quality_metric="rougeL", quality=27.5)
    full = Row(method="full", status="ok", name="full", quality_metric="rougeL", quality=18.25)
    text = table([zero, lora, full])
    assert "vs zero-shot" in text and "| +7.50 |" in text and "| -1.75 |" in text
    assert "vs zero-shot" not in table([lora, full])


def test_support_and_option_tables_show_the_method(runner):
    from finetune.docs.methods import render_lr_table, render_table

    assert "| `none` | – | not used: nothing trains |" in render_lr_table()
    assert "| `none` | no |" in render_table() and NEW_HEAD.split(",")[0] in render_table()
    result = _invoke(runner, "options", "method")
    assert "none" in result.output
