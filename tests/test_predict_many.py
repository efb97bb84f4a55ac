"""`finetune predict RUN_A RUN_B ...`: one base model, peft adapters switched, one line each."""

from __future__ import annotations

import json
import shutil

import pytest
import yaml

from finetune.cli import app
from tests.conftest import classification_recipe, write_recipe
from tests.generation_data import translation_rows, write_jsonl

TEXTS = ["the film was good", "an awful boring plot", "it is quite fine"]


def _train(runner, tmp_path, model_dir, files, name, method, **opts):
    train, dev = files
    out = tmp_path / name
    data = classification_recipe(model_dir, train, dev, out, method, **opts)
    recipe = write_recipe(tmp_path / f"{name}.yaml", data)
    result = runner.invoke(app, ["run", str(recipe), "--no-progress"])
    assert result.exit_code == 0, result.output
    return out


def _predict(runner, *runs, texts=TEXTS):
    args = ["predict", *map(str, runs)] + [a for t in texts for a in ("--text", t)]
    result = runner.invoke(app, args)
    return result, [json.loads(x) for x in result.stdout.splitlines() if x.startswith("{")]


@pytest.fixture()
def count_base_loads(monkeypatch):
    import finetune.models.loading as loading

    calls: list[str] = []
    real = loading.load_base_model

    def counting(*args, **kwargs):
        calls.append(str(args[0]))
        return real(*args, **kwargs)

    monkeypatch.setattr(loading, "load_base_model", counting)
    return calls


def test_peft_adapters_share_one_base_and_match_single_run_predictions(
    tmp_path, runner, tiny_model_dir, sentiment_files, count_base_loads
):
    bert = tiny_model_dir("bert")
    run_a = _train(runner, tmp_path, bert, sentiment_files, "a", {"name": "lora"})
    run_b = _train(runner, tmp_path, bert, sentiment_files, "b", {"name": "lora", "r": 4}, seed=3)
    run_c = _train(runner, tmp_path, bert, sentiment_files, "c", {"name": "houlsby"})
    alone = {}
    for run in (run_a, run_b, run_c):
        result, lines = _predict(runner, run)
        assert result.exit_code == 0, result.output
        assert all("run" not in line for line in lines)  # one run: the lines as before
        alone[str(run)] = lines
    count_base_loads.clear()

    result, lines = _predict(runner, run_a, run_b, run_c)
    assert result.exit_code == 0, result.output
    # lora a + b share one base; houlsby (our own format) loads its own
    assert len(count_base_loads) == 2
    assert len(lines) == len(TEXTS) * 3
    expected_runs = [str(r) for r in (run_a, run_b, run_c)] * len(TEXTS)
    assert [line["run"] for line in lines] == expected_runs  # text by text, runs in order
    for i, line in enumerate(lines):
        want = alone[line["run"]][i // 3]
        assert line["label"] == want["label"]
        assert line["probability"] == pytest.approx(want["probability"], abs=1e-5)
    # the two lora adapters really differ: switching must not leave one adapter active
    probs_a = [line["probability"] for line in lines if line["run"] == str(run_a)]
    probs_b = [line["probability"] for line in lines if line["run"] == str(run_b)]
    assert probs_a != pytest.approx(probs_b, abs=1e-4)


def test_runs_on_different_bases_or_tasks_are_refused(
    tmp_path, runner, tiny_model_dir, sentiment_files
):
    run_a = _train(runner, tmp_path, tiny_model_dir("bert"), sentiment_files, "a", {"name": "lora"})
    run_g = _train(runner, tmp_path, tiny_model_dir("gpt2"), sentiment_files, "g", {"name": "lora"})
    result, lines = _predict(runner, run_a, run_g)
    assert result.exit_code == 2 and not lines
    assert str(run_a) in result.output and str(run_g) in result.output
    assert "one base model and task" in result.output

    other_task = tmp_path / "a-summ"  # the same base, a recipe of another task
    shutil.copytree(run_a, other_task)
    recipe = yaml.safe_load((other_task / "recipe.yaml").read_text())
    recipe["task"] = {"type": "summarization", "text": "text", "summary": "label"}
    (other_task / "recipe.yaml").write_text(yaml.safe_dump(recipe))
    result, _ = _predict(runner, run_a, other_task)
    assert result.exit_code == 2 and "summarization" in result.output


def test_generation_adapters_switch_on_one_t5(tmp_path, runner, tiny_model_dir, count_base_loads):
    train = write_jsonl(tmp_path / "train.jsonl", translation_rows(24, seed=1))
    dev = write_jsonl(tmp_path / "dev.jsonl", translation_rows(6, seed=2))
    runs = []
    for name, lr in (("t1", 5e-3), ("t2", 5e-2)):
        data = {
            "model": {"name": str(tiny_model_dir("t5"))},
            "task": {"type": "translation", "source_lang": "en", "target_lang": "de"},
            "data": {"train": str(train), "eval": str(dev)},
            "method": {"name": "lora"},
            "train": {"epochs": 2, "batch_size": 8, "lr": lr, "max_length": 32, "seed": 0},
            "eval": {"batch_size": 8, "generation": {"max_new_tokens": 8}},
            "output": {"dir": str(tmp_path / name)},
        }
        result = runner.invoke(app, ["run", str(write_recipe(tmp_path / f"{name}.yaml", data))])
        assert result.exit_code == 0, result.output
        runs.append(tmp_path / name)
    texts = ["the dog runs in the park", "a man walks"]
    alone = [_predict(runner, run, texts=texts)[1] for run in runs]
    count_base_loads.clear()
    result, lines = _predict(runner, *runs, texts=texts)
    assert result.exit_code == 0, result.output
    assert len(count_base_loads) == 1 and len(lines) == 4
    for i, line in enumerate(lines):
        assert line["run"] == str(runs[i % 2])
        assert line["prediction"] == alone[i % 2][i // 2]["prediction"]
