"""Fair comparisons (issue #15) and sweeps (issue #17.3): the learning-rate search on a hold-out
of train, the report header, bootstrap intervals, load warnings, sweep grid/random/resume and
best.yaml.

Most tests swap the `finetune run` subprocess for a fake whose accuracy depends on the learning
rate (and which records every recipe it is given), so the search and the report logic are
tested in seconds; test_compare_tune_real runs the real thing on a tiny model.
"""

from __future__ import annotations

import csv
import json
import math
import os
import statistics
from pathlib import Path

import pytest
import yaml

from finetune.cli import app
from finetune.comparison import runner as runner_module
from finetune.comparison import tune as tune_module
from finetune.comparison.intervals import (
    bleu_scores,
    bootstrap,
    interval,
    mean_scores,
    paired_within_noise,
    resample_indices,
)
from finetune.run.layout import TRAINER_STATE, RunPaths
from tests.conftest import classification_recipe, write_recipe

BEST_LR = {"full": 2e-4, "lora": 2e-3}  # the fake's optimum per method


def source_path(source: str | dict) -> str:
    return source if isinstance(source, str) else source["path"]


def read_rows(path: Path) -> list[dict]:
    if path.suffix == ".jsonl":
        return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return list(csv.DictReader(path.open()))


class FakeRun:
    """Stands in for `finetune run`: accuracy falls off with log-distance from BEST_LR."""

    def __init__(self) -> None:
        self.recipes: list[dict] = []

    def __call__(self, cmd: list[str], log_file: Path, env: dict):
        recipe = yaml.safe_load(Path(cmd[4]).read_text())
        self.recipes.append(recipe)
        method, lr = recipe["method"]["name"], recipe["train"]["lr"]
        p = max(0.05, 0.95 - 0.2 * abs(math.log2(lr / BEST_LR[method])))
        p -= 0.05 * recipe["train"]["seed"]  # seeds 0, 1, 2 differ
        rows = read_rows(Path(source_path(recipe["data"]["eval"])))
        limit = recipe["data"].get("max_eval_samples")
        rows = rows[:limit] if limit else rows
        paths = RunPaths(Path(recipe["output"]["dir"]))
        paths.root.mkdir(parents=True, exist_ok=True)
        records, correct = [], 0
        for i, row in enumerate(rows):
            ok = (i * 37 % 100) < 100 * p
            correct += ok
            label = row["label"] if ok else "wrong"
            records.append({"text": row["text"], "label": label, "reference": row["label"]})
        paths.predictions.write_text("".join(json.dumps(r) + "\n" for r in records))
        metrics = {
            "accuracy": correct / len(rows),
            "trainable_parameters": 10 if method == "lora" else 100,
            "total_parameters": 100,
            "train_seconds": 1.0,
            "artifact_bytes": 1000,
        }
        paths.metrics.write_text(json.dumps(metrics))
        paths.finished.write_text("done\n")
        timing = runner_module.Timing(2.0, 3.0, 0.5, 9.0, 2)  # load 9 on 2 cores: busy
        log_file.write_text("")
        return 0, timing


@pytest.fixture()
def fake_run(monkeypatch):
    fake = FakeRun()
    monkeypatch.setattr(runner_module, "timed_run", fake)
    return fake


@pytest.fixture()
def base_recipe(tmp_path, tiny_model_dir, sentiment_files):
    train, dev = sentiment_files
    data = classification_recipe(
        tiny_model_dir("bert"), train, dev, tmp_path / "unused", {"name": "lora"}, lr=2e-3
    )
    return write_recipe(tmp_path / "r.yaml", data), train, dev


def test_compare_tune_searches_on_train_hold_out_only(
    tmp_path, runner, fake_run, base_recipe, monkeypatch
):
    monkeypatch.setattr(tune_module, "MIN_SEARCH_STEPS", 2)  # so the fraction shows on 12 steps
    recipe, train, dev = base_recipe
    out = tmp_path / "cmp"
    args = ["compare", str(recipe), "--methods", "full,lora", "--tune", "--out", str(out)]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    search = [r for r in fake_run.recipes if "/search/" in r["output"]["dir"]]
    finals = [r for r in fake_run.recipes if "/search/" not in r["output"]["dir"]]
    # 5 rates per method, plus one past the edge for full, whose best (2e-4) is its largest
    assert len(search) == 11 and len(finals) == 2
    # the search never names the eval split (nor any file but its own two)
    for r in search:
        assert str(dev) not in yaml.safe_dump(r)
        assert Path(r["data"]["train"]).parent == Path(r["data"]["eval"]).parent == out / "search"
    search_train = read_rows(out / "search" / "train.jsonl")
    held = read_rows(out / "search" / "dev.jsonl")
    train_rows = read_rows(train)
    key = lambda row: (row["text"], row["label"])  # noqa: E731
    assert sorted(map(key, search_train + held)) == sorted(map(key, train_rows))
    assert len(held) == round(0.2 * len(train_rows))
    # search runs are short: 30% of the full run's steps (2 epochs x 96 rows / 16)
    assert {r["train"]["max_steps"] for r in search} == {math.ceil(0.3 * 12)}
    # the final runs use the recipe's eval split, at the chosen rates
    assert {r["method"]["name"]: r["train"]["lr"] for r in finals} == BEST_LR
    assert all(source_path(r["data"]["eval"]) == str(dev) for r in finals)
    rows = {r["method"]: r for r in json.loads((out / "report.json").read_text())}
    assert rows["full"]["tuned"] and [s["lr"] for s in rows["full"]["search"]] == [
        1.25e-5,
        2.5e-5,
        5e-5,
        1e-4,
        2e-4,
        4e-4,  # the grid widened past its edge; 4e-4 scored lower, so 2e-4 stays chosen
    ]
    assert [s["lr"] for s in rows["lora"]["search"]] == [5e-4, 1e-3, 2e-3, 4e-3, 8e-3]
    report = (out / "report.md").read_text()
    assert "Learning rates were tuned per method" in report and "not tuned" not in report
    assert "### `full`: learning-rate search" in report
    assert "| 0.0002 | accuracy" in report and "chosen" in report


def test_compare_untuned_header_names_rates(tmp_path, runner, fake_run, base_recipe):
    recipe, _, _ = base_recipe
    out = tmp_path / "cmp"
    result = runner.invoke(
        app, ["compare", str(recipe), "--methods", "full,lora", "--out", str(out)]
    )
    assert result.exit_code == 0, result.output
    report = (out / "report.md").read_text()
    assert "**Learning rates were not tuned.**" in report
    assert "full 5e-05 (registry default)" in report and "lora 0.002 (the recipe's)" in report
    assert "learning-rate search" not in report
    # the fake's loads (9 on 2 cores) make every time suspect: the report says so
    assert "Warning: the machine was busy" in report
    rows = json.loads((out / "report.json").read_text())
    assert all(r["cpu_seconds"] == 3.0 and r["load_after"] == 9.0 for r in rows)
    # full at 5e-5 (fake accuracy ~0.55) is clearly below LoRA at its optimum (~0.95)
    verdicts = {r["method"]: r["verdict"] for r in rows}
    assert verdicts == {"lora": "best", "full": "below best"}
    for r in rows:
        assert r["quality_low"] <= r["quality"] <= r["quality_high"]


def test_compare_seeds_and_resume(tmp_path, runner, fake_run, base_recipe):
    recipe, _, _ = base_recipe
    out = tmp_path / "cmp"
    args = ["compare", str(recipe), "--methods", "lora", "--seeds", "3", "--out", str(out)]
    assert runner.invoke(app, args).exit_code == 0
    assert sorted(r["train"]["seed"] for r in fake_run.recipes) == [0, 1, 2]
    row = json.loads((out / "report.json").read_text())[0]
    assert row["seeds"] == [0, 1, 2] and len(row["per_seed"]) == 3
    assert row["quality_std"] == pytest.approx(statistics.stdev(row["per_seed"]))
    assert row["quality_std"] > 0 and row["quality"] == pytest.approx(
        statistics.mean(row["per_seed"])
    )
    assert "3 seeds per method" in (out / "report.md").read_text()
    # finished points are read back, not rerun
    assert runner.invoke(app, args).exit_code == 0
    assert len(fake_run.recipes) == 3


def test_sweep_grid_random_resume_and_best(tmp_path, runner, fake_run, base_recipe):
    recipe, _, _ = base_recipe
    out = tmp_path / "sw"
    axes = ["train.lr=5e-4,2e-3,8e-3", "method.r=4,8", "train.epochs=1"]
    args = ["sweep", str(recipe), *axes, "--methods", "lora,full", "--out", str(out)]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    # lora: 3 x 2 points; full has no method.r: 3 points; train.epochs=1 is fixed everywhere
    assert len(fake_run.recipes) == 9
    assert all(r["train"]["epochs"] == 1 for r in fake_run.recipes)
    assert {r["method"].get("r") for r in fake_run.recipes if r["method"]["name"] == "lora"} == {
        4,
        8,
    }
    best = yaml.safe_load((out / "best.yaml").read_text())
    assert best["method"]["name"] == "lora" and best["train"]["lr"] == 2e-3
    assert best["output"]["dir"] == str(out / "best")
    report = (out / "report.md").read_text()
    assert "| point | train.lr | method.r | quality" in report  # no second, identical lr column
    rows = list(csv.DictReader((out / "report.csv").open()))
    assert len(rows) == 9 and "point.train.lr" in rows[0]
    # resumable: a second call runs nothing
    assert runner.invoke(app, args).exit_code == 0
    assert len(fake_run.recipes) == 9
    # --random N: N of the grid's points, the same N for the same seed
    rand = ["sweep", str(recipe), "train.lr=1e-4,5e-4,1e-3,2e-3,4e-3", "--random", "2"]
    assert runner.invoke(app, [*rand, "--out", str(tmp_path / "r1")]).exit_code == 0
    assert runner.invoke(app, [*rand, "--out", str(tmp_path / "r2")]).exit_code == 0
    first, second = fake_run.recipes[9:11], fake_run.recipes[11:13]
    assert len(fake_run.recipes) == 13
    assert [r["train"]["lr"] for r in first] == [r["train"]["lr"] for r in second]


def test_sweep_rejects_malformed_axis(tmp_path, runner, base_recipe):
    recipe, _, _ = base_recipe
    result = runner.invoke(app, ["sweep", str(recipe), "train.lr"])
    assert result.exit_code == 2 and "key=value" in result.output


# --------------------------------------------------------------------------- intervals


def test_bootstrap_interval_of_known_accuracy():
    correct = [1.0] * 320 + [0.0] * 80  # accuracy 0.8 on 400 examples
    values = bootstrap([mean_scores(correct)], resample_indices(400))
    lo, hi = interval(values)
    half = 1.96 * math.sqrt(0.8 * 0.2 / 400)  # the normal approximation: 0.039
    assert lo < 0.8 < hi
    assert abs((hi - lo) / 2 - half) < 0.01


def test_paired_bootstrap_noise_verdicts():
    samples = resample_indices(200)
    a = bootstrap([mean_scores([float(i % 10 < 8) for i in range(200)])], samples)
    near = bootstrap([mean_scores([float(i % 10 < 8 and i != 3) for i in range(200)])], samples)
    far = bootstrap([mean_scores([float(i % 2 == 0) for i in range(200)])], samples)
    assert paired_within_noise(a, near)  # one example apart
    assert not paired_within_noise(a, far)  # 0.8 vs 0.5


def test_bleu_is_recomputed_as_corpus_bleu_on_each_resample():
    from sacrebleu.metrics import BLEU

    hyps = ["the cat sat on the mat", "a dog barked loudly", "it is raining", "hello there"]
    refs = [["the cat sat on a mat"], ["the dog barked"], ["it rains"], ["hello there friend"]]
    scores = bleu_scores(hyps, refs, "en")
    for idx in ([0, 0, 1, 3], [2, 1, 1, 0], [0, 1, 2, 3]):
        expected = BLEU(trg_lang="en").corpus_score(
            [hyps[i] for i in idx], [[refs[i][0] for i in idx]]
        )
        assert scores.value(idx) == pytest.approx(expected.score)


@pytest.mark.slow
def test_compare_tune_real(tmp_path, runner, base_recipe, monkeypatch):
    """The real subprocesses on a tiny model: the search runs train and score on the train
    hold-out only (their predictions are held-out train rows, never dev rows)."""
    recipe, _, dev = base_recipe
    monkeypatch.chdir(tmp_path)
    out = tmp_path / "cmp"
    args = ["compare", str(recipe), "--methods", "lora", "--tune", "--tune-rates", "3"]
    result = runner.invoke(app, [*args, "--tune-budget", "0.5", "--out", str(out)])
    assert result.exit_code == 0, result.output
    row = json.loads((out / "report.json").read_text())[0]
    assert row["status"] == "ok" and row["tuned"]
    rates = [s["lr"] for s in row["search"]]
    # the 3-rate grid, then at most two rates past an edge where the best one lay on it
    assert {1e-3, 2e-3, 4e-3} <= set(rates) and len(rates) <= 5
    assert all(s["score"] is not None for s in row["search"]) and row["lr"] in rates
    assert all(s["low"] <= s["score"] <= s["high"] for s in row["search"])  # held-out noise
    held = {r["text"] for r in read_rows(out / "search" / "dev.jsonl")}
    dev_texts = {r["text"] for r in read_rows(dev)}
    for s in row["search"]:
        search_dir = out / "search" / f"lora-lr{s['lr']:g}"
        assert str(dev) not in (out / "search" / f"lora-lr{s['lr']:g}.yaml").read_text()
        texts = [r["text"] for r in read_rows(RunPaths(search_dir).predictions)]
        assert texts and set(texts) <= held and not (set(texts) & (dev_texts - held))
    final = read_rows(RunPaths(out / "lora").predictions)
    assert len(final) == len(read_rows(dev))  # the report's figure is on the eval split
    assert row["quality_low"] <= row["quality"] <= row["quality_high"]


def test_sweep_of_rates_under_1e_4_keeps_them_numbers(tmp_path, runner, fake_run, base_recipe):
    """Python writes 5e-05 without a dot and YAML 1.1 reads that as a string: a sweep over
    full fine-tuning's usual rates crashed while writing its report (found by
    benchmarks/compare_tune.py)."""
    recipe, _, _ = base_recipe
    out = tmp_path / "low"
    args = ["sweep", str(recipe), "train.lr=1.25e-5,5e-5,2e-4", "--methods", "full"]
    result = runner.invoke(app, [*args, "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert [r["train"]["lr"] for r in fake_run.recipes] == [1.25e-5, 5e-5, 2e-4]
    assert "| 5e-05 |" in (out / "report.md").read_text()


def test_tune_hold_out_keeps_every_held_out_class_trainable(tmp_path, base_recipe):
    """With many classes and few rows each, the seeded hold-out put a class's only rows in the
    search's dev file and every search run failed on an unseen label (E205); found by
    benchmarks/compare_tune.py on its 36-intent set."""
    from finetune.comparison.tune import search_split
    from tests.conftest import write_csv

    recipe, _, dev = base_recipe
    rows = [
        {"text": f"words of intent {c} number {k}", "label": f"intent_{c}"}
        for c in range(30)
        for k in range(1 + c % 3)
    ]  # 1, 2 or 3 rows per class
    train = write_csv(tmp_path / "many.csv", rows)
    base = yaml.safe_load(recipe.read_text())
    base["data"] = {"train": str(train), "eval": str(dev)}
    split = search_split(base, tmp_path, tmp_path / "cmp", seed=0)
    search_train, held = read_rows(split.train), read_rows(split.dev)
    assert held and {r["label"] for r in held} <= {r["label"] for r in search_train}
    key = lambda row: (row["text"], row["label"])  # noqa: E731
    assert sorted(map(key, search_train + held)) == sorted(map(key, rows))


# --------------------------------------------------------------------------- bad input, resume


def test_misspelt_overrides_are_refused_before_anything_runs(
    tmp_path, runner, fake_run, base_recipe
):
    """A typo used to fail every point alone, as a report row, with exit 0."""
    recipe, _, _ = base_recipe
    out = ["--out", str(tmp_path / "x")]
    result = runner.invoke(app, ["compare", str(recipe), "trian.lr=1e-3", *out])
    assert result.exit_code == 2 and "trian" in result.output and "'train'" in result.output
    result = runner.invoke(app, ["sweep", str(recipe), "trian.lr=1e-3,2e-3", *out])
    assert result.exit_code == 2 and "trian" in result.output
    result = runner.invoke(app, ["sweep", str(recipe), "train.lr=1e-3,fast", *out])
    assert result.exit_code == 2 and "train.lr" in result.output
    result = runner.invoke(app, ["sweep", str(recipe), "method.rr=4,8", *out])
    assert result.exit_code == 2 and "no method swept (lora) has an option 'rr'" in result.output
    assert fake_run.recipes == []


def test_a_refused_point_never_reads_back_an_older_run(tmp_path, runner, fake_run, base_recipe):
    """The point's recipe is written before its check; a refused recipe must not then match
    the older finished run in the same folder on the next call."""
    recipe, _, _ = base_recipe
    base = ["compare", str(recipe), "--methods", "lora", "--out", str(tmp_path / "cmp")]
    assert runner.invoke(app, base).exit_code == 0 and len(fake_run.recipes) == 1
    missing = f"data.eval={tmp_path / 'nowhere.jsonl'}"  # valid schema, refused by the check
    for _ in range(2):
        assert runner.invoke(app, [*base, missing]).exit_code == 0
        row = json.loads((tmp_path / "cmp" / "report.json").read_text())[0]
        assert row["status"].startswith("not run:") and "file not found" in row["status"]
    assert len(fake_run.recipes) == 1


def test_an_interrupted_point_resumes_from_its_checkpoint(
    tmp_path, runner, base_recipe, monkeypatch
):
    recipe, _, _ = base_recipe
    commands: list[list[str]] = []
    fake = FakeRun()

    def interrupted_then_fine(cmd, log_file, env):
        commands.append(cmd)
        if len(commands) == 1:  # stopped by Ctrl-C after writing a checkpoint
            run_dir = Path(yaml.safe_load(Path(cmd[4]).read_text())["output"]["dir"])
            checkpoint = run_dir / "checkpoints" / "step-00000004"
            checkpoint.mkdir(parents=True)
            (checkpoint / TRAINER_STATE).write_text("{}")  # complete: what resume loads
            (run_dir / "checkpoints" / "step-00000008").mkdir()  # cut off while being written
            raise KeyboardInterrupt
        if len(commands) == 2:  # `run --resume` refused it (say the train data changed)
            log_file.write_text("error: train data changed since the checkpoint\n")
            return 2, runner_module.Timing(1.0, 1.0, 0.1, 0.1, 2)
        return fake(cmd, log_file, env)

    monkeypatch.setattr(runner_module, "timed_run", interrupted_then_fine)
    args = ["compare", str(recipe), "--methods", "lora", "--out", str(tmp_path / "cmp")]
    stopped = runner.invoke(app, args)
    assert stopped.exit_code == 130 and "rerun the same `finetune compare`" in stopped.output
    assert runner.invoke(app, args).exit_code == 0
    assert "--resume" in commands[1] and "--overwrite" not in commands[1]
    # a refused resume is not a point stuck failing on every rerun: it trains again
    assert "--overwrite" in commands[2] and "--resume" not in commands[2]
    assert json.loads((tmp_path / "cmp" / "report.json").read_text())[0]["status"] == "ok"


def test_a_half_written_checkpoint_is_not_resumed(tmp_path):
    run_dir, recipe_file = tmp_path / "lora", tmp_path / "lora.yaml"
    recipe_file.write_text("x: 1\n")
    (run_dir / "checkpoints" / "step-00000004").mkdir(parents=True)  # no trainer state yet
    assert not runner_module.resumable(recipe_file, run_dir, "x: 1\n")
    (run_dir / "checkpoints" / "step-00000004" / TRAINER_STATE).write_text("{}")
    assert runner_module.resumable(recipe_file, run_dir, "x: 1\n")
    assert not runner_module.resumable(recipe_file, run_dir, "x: 2\n")  # another recipe


def test_points_finished_before_digests_are_still_read_back(
    tmp_path, runner, fake_run, base_recipe
):
    """An upgrade must not retrain (and overwrite) every finished point of a comparison."""
    recipe, _, _ = base_recipe
    out = tmp_path / "cmp"
    args = ["compare", str(recipe), "--methods", "lora", "--out", str(out)]
    assert runner.invoke(app, args).exit_code == 0 and len(fake_run.recipes) == 1
    timing = json.loads((out / "lora.timing.json").read_text())
    del timing["recipe_sha256"]  # as an older version wrote it
    (out / "lora.timing.json").write_text(json.dumps(timing))
    assert runner.invoke(app, args).exit_code == 0 and len(fake_run.recipes) == 1
    # ... unless its recipe file was written after the run finished (a later, refused point)
    later = RunPaths(out / "lora").finished.stat().st_mtime + 5
    os.utime(out / "lora.yaml", (later, later))
    text = (out / "lora.yaml").read_text()
    assert not runner_module.reusable(
        out / "lora.yaml", out / "lora", out / "lora.timing.json", text
    )


def test_sweep_without_a_scored_point_names_no_best_recipe(
    tmp_path, runner, base_recipe, monkeypatch
):
    recipe, _, _ = base_recipe
    out = tmp_path / "sw"
    out.mkdir()
    (out / "best.yaml").write_text("# an earlier sweep's\n")

    def failing(cmd, log_file, env):
        log_file.write_text("error: boom\n")
        return 1, runner_module.Timing(1.0, 1.0, 0.1, 0.1, 2)

    monkeypatch.setattr(runner_module, "timed_run", failing)
    result = runner.invoke(app, ["sweep", str(recipe), "train.lr=1e-3,2e-3", "--out", str(out)])
    assert result.exit_code == 0 and "no best point" in result.output
    assert not (out / "best.yaml").exists()
    assert "there is no best.yaml" in (out / "report.md").read_text()


def test_a_bound_keeps_the_decimals_of_its_figure():
    """ROUGE is x100 (2 decimals); a lower bound of 0 was printed as 0.0000 beside it."""
    from finetune.comparison.report import quality_cell

    rouge = runner_module.Row("lora", "ok", quality_metric="rougeL", quality=4.04)
    rouge.quality_low, rouge.quality_high = 0.0, 12.12
    assert quality_cell(rouge) == "rougeL 4.04 [0.00, 12.12]"
    accuracy = runner_module.Row("lora", "ok", quality_metric="accuracy", quality=0.85)
    accuracy.quality_low, accuracy.quality_high = 0.8, 0.9
    assert quality_cell(accuracy) == "accuracy 0.8500 [0.8000, 0.9000]"


def test_the_zero_shot_row_is_a_line_on_the_plot(tmp_path, monkeypatch):
    """0 trainable parameters has no place on the log axis: it was left off without a word."""
    from matplotlib.axes import Axes

    from finetune.comparison.report import plot

    lines: list[float] = []
    original = Axes.axhline

    def spy(self, y=0, *args, **kwargs):
        lines.append(y)
        return original(self, y, *args, **kwargs)

    monkeypatch.setattr(Axes, "axhline", spy)
    base = runner_module.Row("none", "ok", name="none", quality_metric="rougeL", quality=3.1)
    base.baseline, base.trainable = True, 0
    lora = runner_module.Row("lora", "ok", name="lora", quality_metric="rougeL", quality=9.0)
    lora.trainable = 1000
    plot([base, lora], tmp_path / "report.png", "t")
    assert lines == [3.1] and (tmp_path / "report.png").stat().st_size > 0
