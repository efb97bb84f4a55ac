"""Does `compare --tune --methods full,lora` give the verdict a hand-made grid gives?

The grid: each method at 5 learning rates (its default x 1/4, 1/2, 1, 2, 4), full budget,
scored on the eval split, best rate kept: the verdict is best-LoRA minus best-full. The tuned
comparison picks each rate on a hold-out of train at 30% of the budget and then runs in full.
Issue #15 asks for the two verdicts to agree within 1 point (accuracy x100).

    python benchmarks/compare_tune.py                 # the synthetic 36-intent set
    python benchmarks/compare_tune.py --data sst2     # the quick-start SST-2 sample
    python benchmarks/compare_tune.py --train 360 --epochs 2   # smaller, for a busy machine

Results go to stdout and benchmarks/results/compare_tune_<data>.{md,json}; the runs stay under
--work (default runs/bench-compare-tune), so an interrupted benchmark resumes where it stopped.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results"
sys.path.insert(0, str(REPO / "benchmarks"))

from many_class import write as write_many_class  # noqa: E402

METHODS = ("full", "lora")
FACTORS = (0.25, 0.5, 1.0, 2.0, 4.0)


def base_recipe(args: argparse.Namespace, work: Path) -> dict[str, Any]:
    if args.data == "sst2":
        sst2 = REPO / "recipes" / "data" / "sst2"
        data = {
            "train": str(sst2 / "train.tsv"),
            "eval": str(sst2 / "dev.tsv"),
            "max_train_samples": args.train,
        }
    else:
        train, test = write_many_class(work / "data", args.train, args.eval)
        data = {"train": str(train), "eval": str(test)}
    return {
        "model": {"name": "bundled:minilm-l6"},
        "task": {"type": "classification", "text": "text", "label": "label"},
        "data": data,
        "method": {"name": "lora", "r": 8, "alpha": 16},
        "train": {
            "epochs": args.epochs,
            "batch_size": 32,
            "max_length": args.max_length,
            "seed": 42,
        },
    }


def best_of(rows: list[Any]) -> tuple[float | None, float | None]:
    done = [r for r in rows if r.status == "ok" and r.quality is not None]
    if not done:
        return None, None
    best = max(done, key=lambda r: r.quality)
    return best.quality, best.lr


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", choices=("many_class", "sst2"), default="many_class")
    parser.add_argument("--train", type=int, default=1080)
    parser.add_argument("--eval", type=int, default=360)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--max-length", type=int, default=32)
    parser.add_argument("--work", type=Path, default=Path("runs/bench-compare-tune"))
    args = parser.parse_args()
    from finetune.commands.compare import compare
    from finetune.commands.sweep import sweep
    from finetune.comparison.tune import TuneOptions
    from finetune.methods import METHODS as REGISTRY

    work = args.work / args.data
    work.mkdir(parents=True, exist_ok=True)
    recipe_path = work / "base.yaml"
    recipe_path.write_text(yaml.safe_dump(base_recipe(args, work), sort_keys=False))
    started = time.perf_counter()
    grid: dict[str, dict[str, Any]] = {}
    for method in METHODS:
        rates = [REGISTRY[method].default_lr * f for f in FACTORS]
        axis = "train.lr=" + ",".join(f"{r:g}" for r in rates)
        rows, _, _ = sweep(recipe_path, [axis], [method], work / f"grid-{method}")
        quality, lr = best_of(rows)
        grid[method] = {
            "best": quality,
            "lr": lr,
            "all": {r.lr: r.quality for r in rows},
        }
    tuned_rows, _ = compare(
        recipe_path, list(METHODS), [], work / "tuned", tune=TuneOptions(rates=5, budget=0.3)
    )
    tuned = {r.method: {"quality": r.quality, "lr": r.lr} for r in tuned_rows}
    report(args, grid, tuned, time.perf_counter() - started)


def verdict(full: float | None, lora: float | None) -> float | None:
    """LoRA minus full, in accuracy points (x100)."""
    return None if full is None or lora is None else round(100 * (lora - full), 2)


def report(args: argparse.Namespace, grid: dict, tuned: dict, seconds: float) -> None:
    grid_verdict = verdict(grid["full"]["best"], grid["lora"]["best"])
    tuned_verdict = verdict(tuned["full"]["quality"], tuned["lora"]["quality"])
    agree = None
    if grid_verdict is not None and tuned_verdict is not None:
        agree = abs(grid_verdict - tuned_verdict) <= 1.0
    lines = [
        f"# compare --tune vs a hand-made grid ({args.data}, {args.train} train rows, "
        f"{args.epochs} epochs, MiniLM)",
        "",
        f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}, {seconds / 60:.0f} min",
        "",
        "| method | grid: accuracy per lr | grid best (lr) | --tune: chosen lr | --tune accuracy |",
        "|---|---|---|---|---|",
    ]
    for m in METHODS:
        cells = ", ".join(f"{lr:g}: {q:.4f}" for lr, q in grid[m]["all"].items() if q is not None)
        lines.append(
            f"| {m} | {cells} | {grid[m]['best']:.4f} ({grid[m]['lr']:g}) "
            f"| {tuned[m]['lr']:g} | {tuned[m]['quality']:.4f} |"
        )
    lines += [
        "",
        f"Verdict (LoRA minus full, points): grid {grid_verdict}, --tune {tuned_verdict}; "
        f"within 1 point: {agree}",
    ]
    table = "\n".join(lines) + "\n"
    print(table)
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"compare_tune_{args.data}.md").write_text(table, encoding="utf-8")
    payload = {"grid": grid, "tuned": tuned, "grid_verdict": grid_verdict}
    payload.update({"tuned_verdict": tuned_verdict, "within_1_point": agree})
    (RESULTS / f"compare_tune_{args.data}.json").write_text(
        json.dumps(payload, indent=2, default=str) + "\n"
    )


if __name__ == "__main__":
    main()
