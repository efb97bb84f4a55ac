"""Comparing methods across a suite of tasks: suite files, the methods x tasks report with its
average and mean rank, the LaTeX table and plots, failed cells, the widening rate search, and
`--jobs` (the same results with two processes at once as with one)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from finetune.cli import app
from finetune.comparison.intervals import one_answer
from finetune.comparison.jobs import slots
from finetune.comparison.report import search_tables
from finetune.comparison.runner import Point, Row
from finetune.comparison.tune import (
    WIDEN,
    Search,
    SearchData,
    SearchEntry,
    best_rate,
    quieter_rate,
    safe_rate,
)
from tests.conftest import classification_recipe, write_csv, write_recipe
from tests.tiny_models import sentiment_rows


def test_cpu_slots_split_the_cores_and_gpu_slots_take_one_gpu_each(monkeypatch):
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    cpu = slots(2, gpus=0, cores=8)
    assert [s.env["OMP_NUM_THREADS"] for s in cpu] == ["4", "4"]
    assert slots(3, gpus=0, cores=2)[0].env["OMP_NUM_THREADS"] == "1"  # at least one each
    gpu = slots(3, gpus=2)
    assert [s.env["CUDA_VISIBLE_DEVICES"] for s in gpu] == ["0", "1", "0"]
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "5,7")
    assert [s.env["CUDA_VISIBLE_DEVICES"] for s in slots(2, gpus=2)] == ["5", "7"]


def _search(tmp_path: Path) -> Search:
    split = SearchData(tmp_path / "t.jsonl", tmp_path / "d.jsonl", rows=10)
    data = {"method": {"name": "lora"}, "train": {"lr": 1e-3}}
    return Search("lora", "lora", data, split, tmp_path, 3, 1e-3, pending=[5e-4, 1e-3, 2e-3])


def _rows(scores: list[float]) -> list[Row]:
    return [Row("lora", "ok", quality_metric="accuracy", quality=s) for s in scores]


def test_search_widens_past_an_edge_at_most_twice(tmp_path):
    search = _search(tmp_path)
    assert [p.name for p in search.points()] == [
        "search/lora-lr0.0005",
        "search/lora-lr0.001",
        "search/lora-lr0.002",
    ]
    search.record(_rows([0.5, 0.6, 0.7]))  # best at the top edge: try one rate further up
    assert search.pending == [4e-3]
    search.record(_rows([0.8]))  # still the edge
    assert search.pending == [8e-3]
    search.record(_rows([0.9]))  # still rising, but the grid has widened WIDEN times
    assert WIDEN == 2 and search.pending == [] and search.best == 8e-3
    inner = _search(tmp_path)
    inner.record(_rows([0.5, 0.9, 0.7]))  # best inside the grid: done
    assert inner.pending == [] and inner.best == 1e-3
    low = _search(tmp_path)
    low.record(_rows([0.9, 0.6, 0.5]))  # best at the bottom edge: one rate further down
    assert low.pending == [2.5e-4]


def _table(scores: list[float | None], metric: str = "accuracy") -> list[SearchEntry]:
    rates = [1e-3 * 2**i for i in range(len(scores))]
    return [
        {"lr": lr, "steps": 3, "metric": metric, "score": s, "status": "ok" if s else "failed"}
        for lr, s in zip(rates, scores)
    ]


def test_a_best_rate_next_to_a_cliff_gives_way_to_the_rate_below(tmp_path):
    # the quick start's LoRA search: 8e-3 best held out, 1.6e-2 back to chance
    cliff = _table([0.78, 0.834, 0.838, 0.85, 0.532])
    assert safe_rate(cliff, 8e-3) == 4e-3
    # the rate above fell, but stayed above the smallest rate's score: no cliff (OFT's search)
    assert safe_rate(_table([0.796, 0.83, 0.84, 0.85, 0.812]), 8e-3) == 8e-3
    assert safe_rate(_table([0.7, 0.8, 0.9, None]), 4e-3) == 2e-3  # the run above failed
    assert safe_rate(_table([0.7, 0.8, 0.9]), 4e-3) == 4e-3  # top edge: nothing above it
    # a flat curve is no cliff: the rate above must score worse than the smallest rate
    assert safe_rate(_table([0.5, 0.5, 0.5]), 2e-3) == 2e-3
    assert safe_rate(_table([0.80, 0.79, 0.81, 0.80, 0.60]), 4e-3) == 4e-3
    # a finished run without a score (a constant prediction has no correlation) collapsed;
    # the floor is the smallest rate that scored
    no_score = _table([0.3, 0.7, 0.9, 0.8], metric="pearson")
    no_score[3]["score"], no_score[0]["score"] = None, None
    assert no_score[3]["status"] == "ok" and safe_rate(no_score, 4e-3) == 2e-3
    floor = _table([0.3, 0.7, 0.9, 0.6], metric="pearson")
    floor[0]["score"] = None  # the floor is then 0.7: 0.6 above the best is below it
    assert safe_rate(floor, 4e-3) == 2e-3
    assert safe_rate(_table([0.9, 0.1]), 1e-3) == 1e-3  # bottom edge: nothing below it
    # lower is better (MSE): the rate above scoring worse than the smallest is the cliff
    assert safe_rate(_table([0.9, 0.5, 0.3, 1.2], metric="mse"), 4e-3) == 2e-3
    assert safe_rate(_table([0.9, 0.5, 0.3, 0.6], metric="mse"), 4e-3) == 4e-3
    search = _search(tmp_path)
    search.record(_rows([0.78, 0.85, 0.532]))
    assert search.pending == [] and search.best == 1e-3 and search.chosen == 5e-4
    row = Row("lora", "ok", quality_metric="accuracy", quality=0.8, lr=5e-4, search=search.table)
    report = search_tables([row])
    assert "| 0.0005 | accuracy 0.7800 | chosen |" in report
    assert "| 0.001 | accuracy 0.8500 | best held out; the rate above it collapsed" in report


def _noisy(scores: list[float | None], half_width: float, metric: str = "accuracy"):
    """A search table whose scores carry a 95% interval of +- half_width."""
    table = _table(scores, metric)
    for entry in table:
        if entry["score"] is not None:
            entry["low"] = entry["score"] - half_width
            entry["high"] = entry["score"] + half_width
    return table


def test_a_best_rate_within_noise_of_the_rates_below_gives_way_to_the_smallest():
    # BitFit's SST-2 search on 400 held-out rows: 4e-3 0.7675, 8e-3 0.7725 (interval +-4 points,
    # one standard error ~2): the full runs at 8e-3 collapsed on two seeds of three
    bitfit = _noisy([0.6725, 0.72, 0.745, 0.7675, 0.7725], 0.041)
    assert quieter_rate(bitfit, 1.6e-2) == 8e-3
    # only contiguous rates: 2e-3 is 2.75 points below the best, outside one standard error
    assert quieter_rate(_noisy([0.77, 0.70, 0.765, 0.7725], 0.041), 8e-3) == 4e-3
    assert quieter_rate(_noisy([0.60, 0.70, 0.80], 0.02), 4e-3) == 4e-3  # clear winner: kept
    assert quieter_rate(_table([0.76, 0.77]), 2e-3) == 2e-3  # no interval known: kept
    # lower is better (MSE): 0.31 is within one standard error (0.05) of 0.30
    assert quieter_rate(_noisy([0.5, 0.31, 0.30], 0.1, metric="mse"), 4e-3) == 2e-3
    failed = _noisy([0.77, None, 0.7725], 0.041)
    assert quieter_rate(failed, 4e-3) == 4e-3  # a failed run below ends the walk


def test_search_runs_the_smaller_rate_within_noise_and_the_report_says_why(tmp_path):
    search = _search(tmp_path)
    search.table = _noisy([0.60, 0.7675, 0.7725], 0.041)  # rates 1e-3, 2e-3, 4e-3
    search.table[0]["lr"], search.table[1]["lr"], search.table[2]["lr"] = 5e-4, 1e-3, 2e-3
    assert search.best == 2e-3 and search.chosen == 1e-3
    row = Row("bitfit", "ok", quality_metric="accuracy", quality=0.8, lr=1e-3, search=search.table)
    report = search_tables([row])
    assert "| 0.001 | accuracy 0.7675 | chosen |" in report
    assert "| 0.002 | accuracy 0.7725 | best held out, by less than one standard error" in report


def _answers(run_dir: Path, labels: list[str]) -> None:
    """A classification run's predictions.jsonl: one predicted label per held-out row."""
    run_dir.mkdir(parents=True, exist_ok=True)
    lines = [json.dumps({"label": label, "reference": "1"}) for label in labels]
    (run_dir / "predictions.jsonl").write_text("\n".join(lines) + "\n")


def test_a_run_that_gave_every_row_one_label_is_told_apart(tmp_path):
    _answers(tmp_path / "same", ["1", "1", "1"])
    _answers(tmp_path / "mixed", ["1", "0", "1"])
    assert one_answer(tmp_path / "same") and not one_answer(tmp_path / "mixed")
    assert not one_answer(tmp_path / "no-predictions")


def _one_answer(table: list[SearchEntry], *at: int) -> list[SearchEntry]:
    for i in at:
        table[i]["one_answer"] = True
    return table


def test_the_search_never_chooses_a_rate_that_learned_nothing():
    # MRPC, Pfeiffer: 1e-3 and 2e-3 answered "paraphrase" for every held-out pair (F1 0.7685),
    # within one standard error of 4e-3's 0.7823; 8e-3 answered one class again
    pfeiffer = _one_answer(_noisy([0.7685, 0.7685, 0.7823, 0.7685], 0.06), 0, 1, 3)
    assert quieter_rate(pfeiffer, 4e-3) == 4e-3  # the walk stops at a rate that learned nothing
    assert safe_rate(pfeiffer, 4e-3) == 2e-3  # the rate above collapsed to one answer: a cliff
    row = Row("pfeiffer", "ok", quality_metric="accuracy", quality=0.8, lr=2e-3, search=pfeiffer)
    assert "| 0.004 | accuracy 0.7823 | best held out; the rate above it collapsed" in (
        search_tables([row])
    )
    learned = _noisy([0.7685, 0.7685, 0.7823, 0.7685], 0.06)
    assert quieter_rate(learned, 4e-3) == 1e-3 and safe_rate(learned, 4e-3) == 4e-3  # the rule
    # a rate that learned beats one class answered everywhere, even when the latter scores more
    # (F1 of the positive class answered for every row can exceed a learned run's)
    higher = _one_answer(_table([0.70, 0.80]), 1)
    assert best_rate(higher, 1e-3) == 1e-3


def test_a_search_where_no_rate_learned_widens_upward(tmp_path):
    search = _search(tmp_path)
    for name in ("lora-lr0.0005", "lora-lr0.001", "lora-lr0.002"):
        _answers(tmp_path / "search" / name, ["1", "1"])
    rows = _rows([0.77, 0.77, 0.77])
    for row, lr in zip(rows, search.pending):
        row.name = f"search/lora-lr{lr:g}"
    search.record(rows)  # best by the tie-break is the default, inside the grid
    assert [entry["one_answer"] for entry in search.table] == [True, True, True]
    assert search.pending == [4e-3]  # yet the grid grows past its largest rate
    _answers(tmp_path / "search" / "lora-lr0.004", ["1", "0"])
    learned = Row("lora", "ok", "search/lora-lr0.004", quality_metric="accuracy", quality=0.72)
    search.record([learned])
    assert search.best == 4e-3 and search.chosen == 4e-3  # the one rate that learned
    row = Row("lora", "ok", quality_metric="accuracy", quality=0.8, lr=4e-3, search=search.table)
    assert "| 0.001 | accuracy 0.7700 (one label for every row: learned nothing) |" in (
        search_tables([row])
    )


def _task(tmp_path: Path, name: str, seed: int, model: Path) -> Path:
    train = write_csv(tmp_path / name / "train.csv", sentiment_rows(48, seed=seed))
    dev = write_csv(tmp_path / name / "dev.csv", sentiment_rows(24, seed=seed + 100))
    data = classification_recipe(model, train, dev, tmp_path / "unused", {"name": "lora"})
    data["train"].update(epochs=1, batch_size=16)
    data["name"] = name
    return write_recipe(tmp_path / f"{name}.yaml", data)


def _suite(tmp_path: Path, model: Path) -> Path:
    first = _task(tmp_path, "movies", 1, model)
    second = _task(tmp_path, "reviews", 7, model)
    suite = {
        "name": "tiny",
        "tasks": [
            {"recipe": first.name},
            {"recipe": second.name, "overrides": ["train.max_length=24"]},
        ],
    }
    path = tmp_path / "suite.yaml"
    path.write_text(yaml.safe_dump(suite))
    return path


@pytest.mark.slow
def test_two_task_suite_with_two_jobs_equals_one_job(tmp_path, runner, tiny_model_dir):
    suite = _suite(tmp_path, tiny_model_dir("bert"))
    results = {}
    for jobs in (1, 2):
        out = tmp_path / f"cmp-{jobs}"
        args = ["compare", str(suite), "--methods", "lora,bitfit", "--jobs", str(jobs)]
        result = runner.invoke(app, [*args, "--out", str(out)])
        assert result.exit_code == 0, result.output
        results[jobs] = json.loads((out / "report.json").read_text())
        for name in ("report.md", "report.csv", "report.tex", "report.png", "heatmap.png"):
            assert (out / name).is_file(), name
        for task in ("movies", "reviews"):  # each task keeps its own folder and report
            assert (out / task / "report.md").is_file()
            assert (out / task / "lora" / "metrics.json").is_file()
        # the suite's override reached its task only
        reviews = yaml.safe_load((out / "reviews" / "lora.yaml").read_text())
        movies = yaml.safe_load((out / "movies" / "lora.yaml").read_text())
        assert reviews["train"]["max_length"] == 24 and movies["train"]["max_length"] == 32
    one, two = results[1], results[2]
    assert [r["method"] for r in one] == [r["method"] for r in two] == ["lora", "bitfit"]
    for a, b in zip(one, two):
        for task in ("movies", "reviews"):
            assert a["tasks"][task]["status"] == b["tasks"][task]["status"] == "ok"
            assert a["tasks"][task]["quality"] == pytest.approx(b["tasks"][task]["quality"])
        assert a["average"] == pytest.approx(b["average"])
        assert a["mean_rank"] == pytest.approx(b["mean_rank"])
    report = (tmp_path / "cmp-2" / "report.md").read_text()
    assert "| method | movies | reviews | average | mean rank |" in report
    assert "2 runs at a time" in report
    tex = (tmp_path / "cmp-2" / "report.tex").read_text()
    assert tex.startswith("\\begin{tabular}") and "movies & reviews & Avg." in tex


def test_suite_report_scores_ranks_and_keeps_failed_cells(tmp_path):
    from finetune.comparison.plan import Outcome
    from finetune.comparison.suite_report import write_suite_report

    def ok(metric: str, value: float, trainable: int = 100) -> Row:
        return Row("m", "ok", quality_metric=metric, quality=value, trainable=trainable)

    outcomes = [
        Outcome("cola", "full", ok("mcc", 0.50, 1000)),
        Outcome("stsb", "full", ok("pearson", 0.80, 1000)),
        Outcome("sum", "full", ok("rougeL", 30.0, 1000)),
        Outcome("cola", "lora", ok("mcc", 0.40)),
        Outcome("stsb", "lora", ok("pearson", 0.85)),
        Outcome("sum", "lora", ok("rougeL", 30.0)),
        Outcome("cola", "ia3", Row("ia3", "failed: out of memory (E900)", log="/x/ia3.log")),
        Outcome("stsb", "ia3", ok("pearson", 0.70, 10)),
        Outcome("sum", "ia3", ok("rougeL", 20.0, 10)),
    ]
    tasks = ["cola", "stsb", "sum"]
    rows = {r.method: r for r in write_suite_report(tmp_path, "t", [], tasks, outcomes)}
    # fractions x100, ROUGE as is: (50 + 80 + 30) / 3 and (40 + 85 + 30) / 3
    assert rows["full"].average == pytest.approx(160 / 3)
    assert rows["lora"].average == pytest.approx(155 / 3)
    assert rows["ia3"].average is None  # a failed task leaves no average, not a partial one
    # ranks: cola full 1, lora 2; stsb lora 1, full 2, ia3 3; sum full/lora tie 1.5, ia3 3
    assert rows["full"].mean_rank == pytest.approx((1 + 2 + 1.5) / 3)
    assert rows["ia3"].mean_rank == pytest.approx((3 + 3) / 2)
    report = (tmp_path / "report.md").read_text()
    assert "failed: out of memory (E900) (log: /x/ia3.log)" in report
    assert "50.0" in report and "cola: mcc" in report
    tex = (tmp_path / "report.tex").read_text()
    assert "\\textbf{50.0}" in tex and "\\textbf{85.0}" in tex


def _seeded(metric: str, per_seed: list[float], seeds: tuple[int, ...] = (1, 2, 3)) -> Row:
    mean = sum(per_seed) / len(per_seed)
    return Row("m", "ok", quality_metric=metric, quality=mean, seeds=list(seeds),
               per_seed=per_seed, trainable=10)  # fmt: skip


def _seeded_suite(methods: dict[str, list[float]]) -> list:
    from finetune.comparison.plan import Outcome

    return [Outcome(task, method, _seeded(metric, values))
            for method, values in methods.items()
            for task, metric in (("cola", "mcc"), ("stsb", "pearson"))]  # fmt: skip


def test_suite_report_orders_each_seed_and_calls_overlapping_swaps_ties(tmp_path):
    from finetune.comparison.suite_report import write_suite_report

    outcomes = _seeded_suite({
        "full": [0.80, 0.80, 0.80],  # 80 every seed
        "lora": [0.70, 0.70, 0.90],  # 70, 70, 90: above full on seed 3, 76.7 ± 11.5 overlaps 80
        "bitfit": [0.50, 0.52, 0.54],  # last on every seed
    })  # fmt: skip
    rows = {r.method: r for r in write_suite_report(tmp_path, "t", [], ["cola", "stsb"], outcomes)}
    assert rows["lora"].seed_averages == pytest.approx({1: 70.0, 2: 70.0, 3: 90.0})
    assert rows["lora"].average_std == pytest.approx(11.547, abs=1e-3)
    assert rows["full"].average_std == pytest.approx(0.0)
    report = (tmp_path / "report.md").read_text()
    assert "| 3 | lora 90.0 > full 80.0 > bitfit 54.0 |" in report
    assert "| 1 | full 80.0 > lora 70.0 > bitfit 50.0 |" in report
    assert "**Stable within the printed intervals:**" in report
    assert "`full` / `lora` (reversed on seed 3)" in report
    assert "Same place on every seed: bitfit 3rd." in report
    assert "76.7 ± 11.5" in report  # the average's std over the seeds' averages
    record = {r["method"]: r for r in json.loads((tmp_path / "report.json").read_text())}
    assert record["lora"]["seed_averages"] == pytest.approx({"1": 70.0, "2": 70.0, "3": 90.0})
    assert record["lora"]["tasks"]["cola"]["per_seed"] == [0.70, 0.70, 0.90]


def test_suite_report_flags_a_swap_between_separated_methods(tmp_path):
    from finetune.comparison.suite_report import write_suite_report

    # 60, 60, 81: 67.0 ± 12.1 stays below full's 80 ± 0, yet beats it on seed 3
    outcomes = _seeded_suite({"full": [0.80] * 3, "ia3": [0.60, 0.60, 0.81]})
    write_suite_report(tmp_path, "t", [], ["cola", "stsb"], outcomes)
    report = (tmp_path / "report.md").read_text()
    assert "**Not stable within the printed intervals:** 1 pair(s)" in report
    assert "`full` / `ia3` (reversed on seed 3)" in report


def test_suite_report_has_no_seed_section_for_one_seed_or_a_failed_cell(tmp_path):
    from finetune.comparison.plan import Outcome
    from finetune.comparison.suite_report import write_suite_report

    outcomes = _seeded_suite({"full": [0.8, 0.7, 0.9]})
    outcomes += [
        Outcome("cola", "lora", Row("lora", "failed: boom")),
        Outcome("stsb", "lora", _seeded("pearson", [0.8, 0.7, 0.9])),
    ]
    rows = {r.method: r for r in write_suite_report(tmp_path, "t", [], ["cola", "stsb"], outcomes)}
    assert rows["lora"].seed_averages == {} and rows["lora"].average_std is None
    report = (tmp_path / "report.md").read_text()
    assert "The ranking across seeds" not in report  # one method with seeds: nothing to order


def test_suite_file_errors_name_the_file_and_the_fix(tmp_path, runner, tiny_model_dir):
    recipe = _task(tmp_path, "movies", 1, tiny_model_dir("bert"))
    missing = tmp_path / "missing.yaml"
    missing.write_text(yaml.safe_dump({"tasks": [{"recipe": "nope.yaml"}]}))
    result = runner.invoke(app, ["compare", str(missing), "--methods", "lora"])
    assert result.exit_code == 2 and "task recipe nope.yaml not found" in result.output
    twice = tmp_path / "twice.yaml"
    twice.write_text(yaml.safe_dump({"tasks": [{"recipe": recipe.name}, {"recipe": recipe.name}]}))
    result = runner.invoke(app, ["compare", str(twice), "--methods", "lora"])
    assert result.exit_code == 2 and "two tasks are named movies" in result.output
    typo = tmp_path / "typo.yaml"
    typo.write_text(yaml.safe_dump({"tasks": [{"recipe": recipe.name, "overides": []}]}))
    result = runner.invoke(app, ["compare", str(typo), "--methods", "lora"])
    assert result.exit_code == 2 and "overides" in result.output


def test_point_names_carry_the_seed(tmp_path):
    from finetune.comparison.runner import seeded_points

    point = Point({"train": {"seed": 1}}, "lora", "lora")
    names = [p.name for p in seeded_points(point, [1, 2])]
    assert names == ["lora-seed1", "lora-seed2"]
    assert seeded_points(point, [1]) == [point]


def test_a_long_title_is_wrapped_to_a_narrow_heatmap():
    """Two tasks make a 3.8-inch heatmap; its one-line title was cut off at both edges."""
    from finetune.comparison.suite_plots import fitted

    title = "finetune compare: 2 tasks (glue_cola, glue_mrpc): methods x tasks"
    wrapped = fitted(title, 1.6 + 1.1 * 2)
    assert "\n" in wrapped and max(len(line) for line in wrapped.splitlines()) <= 41
    assert " ".join(wrapped.split()) == title


def test_ctrl_c_with_several_jobs_starts_no_queued_point():
    """With --jobs 2, Ctrl-C used to wait for every queued point to train before stopping."""
    import threading
    import time

    from finetune.comparison.jobs import run_all

    started: list[int] = []
    lock = threading.Lock()

    def run(point: int, slot) -> int:
        with lock:
            started.append(point)
        if point == 0:
            raise KeyboardInterrupt
        time.sleep(0.3)
        return point

    with pytest.raises(KeyboardInterrupt):
        run_all(list(range(8)), run, jobs=2)
    assert len(started) <= 3  # the two running, at most one picked up before the cancel
