"""GLUE, small: methods x tasks on the bundled MiniLM, as the adapter papers report them (#25).

    python benchmarks/glue_small.py                       # the issue's budget: hours on 2 cores
    python benchmarks/glue_small.py --methods full,lora --seeds 1 --no-tune --max-train 1000
    python benchmarks/glue_small.py --print-suite         # the suite file it would run
    python benchmarks/glue_small.py --join A.json B.json  # one table from reports of two sittings

Runs `finetune compare` on recipes/suites/glue_small.yaml (CoLA, MRPC, STS-B as GLUE ships them,
read from ../shared/data/glue/, and SST-2 on the bundled sample) with `--tune` and 3 seeds by
default, `--jobs` runs at a time. The runs stay under --work, so an interrupted benchmark resumes
where it stopped (compare reads finished runs back). The suite's report (md, csv, json, tex,
png, heatmap) is copied to benchmarks/results/glue_small.*, followed by the LoRA - full and
adapter - full average gaps beside the published BERT-base ones (UniPELT, Mao et al. 2022,
Table 3: full 82.67, adapter 83.02, LoRA 82.20, prefix 82.07 on GLUE dev), with the caveat
that the model (MiniLM-L6, 22M) and the budget differ.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results"
GLUE = REPO.parent / "shared" / "data" / "glue"
SUITE = REPO / "recipes" / "suites" / "glue_small.yaml"
METHODS = "full,lora,dora,houlsby,pfeiffer,ia3,bitfit,prompt"
PUBLISHED = {"full": 82.67, "houlsby": 83.02, "lora": 82.20, "prefix": 82.07}  # UniPELT T3
FOLDERS = {"glue_cola": "CoLA", "glue_mrpc": "MRPC", "glue_stsb": "STS-B"}


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--methods", default=METHODS)
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--no-tune", action="store_true", help="each method at its default rate")
    parser.add_argument(
        "--tasks",
        default="",
        help="comma-separated task names (default: all; results are then glue_small_<tasks>.*)",
    )
    parser.add_argument("--tune-rates", type=int, default=5, choices=(3, 5))
    parser.add_argument("--tune-budget", type=float, default=0.3)
    parser.add_argument("--jobs", type=int, default=1)
    parser.add_argument("--max-train", type=int, default=None, help="train rows per task")
    parser.add_argument("--glue", type=Path, default=GLUE, help="GLUE's folders CoLA/, MRPC/, ...")
    parser.add_argument("--work", type=Path, default=REPO / "runs" / "bench-glue-small")
    parser.add_argument("--print-suite", action="store_true", help="print the suite and stop")
    parser.add_argument(
        "--join",
        nargs="+",
        type=Path,
        default=[],
        help="report.json files (a suite's or one task's) to join into one table, not run",
    )
    return parser.parse_args(argv)


def suite(args: argparse.Namespace) -> dict[str, object]:
    """recipes/suites/glue_small.yaml with each GLUE task pointed at --glue."""
    data = yaml.safe_load(SUITE.read_text(encoding="utf-8"))
    tasks = []
    wanted = [t for t in args.tasks.split(",") if t]
    for task in data["tasks"]:
        recipe = (SUITE.parent / task["recipe"]).resolve()
        if wanted and recipe.stem not in wanted:
            continue
        overrides = list(task.get("overrides") or [])
        folder = FOLDERS.get(recipe.stem)
        if folder:
            overrides += [
                f"data.train.path={args.glue / folder / 'train.tsv'}",
                f"data.eval.path={args.glue / folder / 'dev.tsv'}",
            ]
        if args.max_train:
            overrides.append(f"data.max_train_samples={args.max_train}")
        tasks.append({"recipe": str(recipe), "name": recipe.stem, "overrides": overrides})
    return {"name": "glue_small", "tasks": tasks}


def compare_command(args: argparse.Namespace, suite_file: Path) -> list[str]:
    cmd = [sys.executable, "-m", "finetune", "compare", str(suite_file)]
    cmd += ["--methods", args.methods, "--seeds", str(args.seeds), "--jobs", str(args.jobs)]
    cmd += ["--out", str(args.work / "report")]
    tune = ["--tune", "--tune-rates", str(args.tune_rates), "--tune-budget", str(args.tune_budget)]
    return cmd + ([] if args.no_tune else tune)


def gaps(report: Path) -> list[str]:
    """Each method's average minus full fine-tuning's, beside the published BERT-base gap."""
    rows = json.loads(report.read_text(encoding="utf-8"))
    rows = rows.get("rows", rows) if isinstance(rows, dict) else rows
    average = {r.get("method"): r.get("average") for r in rows if isinstance(r, dict)}
    full = average.get("full")
    if not isinstance(full, (int, float)):
        return ["No full fine-tuning average (a failed cell?): no gaps to report."]
    lines = ["| method | average - full (here) | published - full (BERT-base, UniPELT) |"]
    lines.append("|---|---|---|")
    for method, value in average.items():
        if method == "full" or not isinstance(value, (int, float)):
            continue
        published = PUBLISHED.get(method)
        shown = f"{published - PUBLISHED['full']:+.2f}" if published is not None else "–"
        lines.append(f"| `{method}` | {value - full:+.2f} | {shown} |")
    lines.append("")
    lines.append(
        "Caveat: the published figures are BERT-base (110M) at the papers' budgets and tuned "
        "rates; here MiniLM-L6 (22M) at this benchmark's budget."
    )
    return lines


ROW_FIELDS = ("status", "quality_metric", "quality", "quality_low", "quality_high", "quality_std",
              "seeds", "per_seed", "trainable", "peak_memory_bytes", "train_seconds",
              "artifact_bytes", "lr", "log")  # fmt: skip


def read_outcomes(report: Path) -> list[Any]:
    """The cells of a finished report.json: a suite's (method -> task -> cell) or one task's
    (a list of rows, the task named after its folder under report/ or the file's stem)."""
    from finetune.comparison.plan import Outcome
    from finetune.comparison.runner import Row

    records = json.loads(report.read_text(encoding="utf-8"))
    outcomes = []
    for record in records:
        if "tasks" in record:  # a suite's report: the cells carry the quality only
            for task, cell in record["tasks"].items():
                row = Row(
                    record["method"],
                    cell["status"],
                    quality_metric=cell["metric"],
                    quality=cell["quality"],
                    quality_low=cell["low"],
                    quality_high=cell["high"],
                    quality_std=cell["std"],
                    seeds=cell.get("seeds", []),  # absent from reports before per-seed orders
                    per_seed=cell.get("per_seed", []),
                    trainable=round(record["trainable_mean"] or 0) or None,
                    log=cell["log"],
                )
                outcomes.append(Outcome(task, record["method"], row))
        else:
            task = report.parent.name if report.name == "report.json" else report.stem
            task = task.removeprefix("glue_small_")  # a subset's results file, as main() names it
            fields = {k: record[k] for k in ROW_FIELDS if k in record}
            outcomes.append(Outcome(task, record["method"], Row(record["method"], **fields)))
    return outcomes


def join(args: argparse.Namespace) -> int:
    """One suite table from reports written in separate sittings (tasks run apart): the same
    average and mean rank `compare` computes, over every task the reports hold."""
    from finetune.comparison.suite_report import write_suite_report

    outcomes = [o for report in args.join for o in read_outcomes(report)]
    tasks = list(dict.fromkeys(o.task for o in outcomes))
    out = args.work / "joined"
    out.mkdir(parents=True, exist_ok=True)
    header = [
        "Joined from: " + ", ".join(f"`{p.name}`" for p in args.join) + ". A suite's report "
        "keeps only quality, so memory, time and size cover the one-task reports' cells alone."
    ]
    write_suite_report(out, "glue_small, joined", header, tasks, outcomes)
    stem = "_".join(["glue_small", *tasks])
    for name in ("report.md", "report.csv", "report.json", "report.tex", "report.png"):
        shutil.copy2(out / name, RESULTS / name.replace("report", stem))
    shutil.copy2(out / "heatmap.png", RESULTS / f"{stem}_heatmap.png")
    text = "\n".join(gaps(out / "report.json"))
    print((out / "report.md").read_text(encoding="utf-8") + "\n" + text)
    with (RESULTS / f"{stem}.md").open("a", encoding="utf-8") as handle:
        handle.write("\n" + text + "\n")
    return 0


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.join:
        return join(args)
    args.work.mkdir(parents=True, exist_ok=True)
    suite_file = args.work / "glue_small.yaml"
    suite_file.write_text(yaml.safe_dump(suite(args), sort_keys=False), encoding="utf-8")
    if args.print_suite:
        print(suite_file.read_text(encoding="utf-8"))
        return 0
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    done = subprocess.run(compare_command(args, suite_file), env=env, cwd=REPO)
    out = args.work / "report"
    tasks = [t for t in args.tasks.split(",") if t]
    if len(tasks) == 1:  # one task is compare's one-recipe report, in the task's folder
        out = out / tasks[0]
    stem = "_".join(["glue_small", *tasks])  # a subset never overwrites the whole suite's files
    for name in ("report.md", "report.csv", "report.json", "report.tex", "report.png"):
        if (out / name).exists():
            shutil.copy2(out / name, RESULTS / name.replace("report", stem))
    if (out / "heatmap.png").exists():
        shutil.copy2(out / "heatmap.png", RESULTS / f"{stem}_heatmap.png")
    if (out / "report.json").exists() and len(tasks) != 1:
        text = "\n".join(gaps(out / "report.json"))
        print(text)
        with (RESULTS / f"{stem}.md").open("a", encoding="utf-8") as handle:
            handle.write("\n" + text + "\n")
    return done.returncode


if __name__ == "__main__":
    sys.exit(main())
