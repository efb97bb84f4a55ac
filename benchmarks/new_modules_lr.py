"""Evidence for `train.new_modules_lr`'s default: full fine-tuning of the bundled MiniLM with the
new classification head at the backbone's rate (off) and at faster rates, on an SST-2 sample
and on the synthetic 36-intent set (benchmarks/many_class.py).

    python benchmarks/new_modules_lr.py            # both sets, 4 head rates (~1 h on a free laptop)
    python benchmarks/new_modules_lr.py --quick    # what ran on the busy 2-core build machine:
                                                   # 36-intent set only (360 rows)
    python benchmarks/new_modules_lr.py --quick --heads off,1e-3,default   # some rows only

Each row is one `finetune run` (train.lr 5e-5, full fine-tuning); results go to stdout and to
benchmarks/results/new_modules_lr.{md,json}.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results"
sys.path.insert(0, str(REPO / "benchmarks"))

from many_class import write as write_many_class  # noqa: E402

# "off" = the head at train.lr; None = the default (max(train.lr, 3e-3), chosen from these rows)
SETTINGS: list[tuple[str, float | None]] = [
    ("off (5e-5)", 5e-5),
    ("3e-4", 3e-4),
    ("1e-3", 1e-3),
    ("default: max(lr, 3e-3)", None),
]


def datasets(tmp: Path, quick: bool) -> dict[str, dict[str, Any]]:
    sst2 = REPO / "recipes" / "data" / "sst2"
    if quick:
        train, test = write_many_class(tmp / "many_class", 360, 180)
        return {"many_class_36": {"train": str(train), "eval": str(test)}}
    train, test = write_many_class(tmp / "many_class", 1800, 720)
    return {
        "sst2": {
            "train": str(sst2 / "train.tsv"),
            "eval": str(sst2 / "dev.tsv"),
            "max_train_samples": 2000,
        },
        "many_class_36": {"train": str(train), "eval": str(test)},
    }


def recipe(
    data: dict[str, Any], new_lr: float | None, epochs: int, out: Path, max_length: int
) -> dict[str, Any]:
    train = {"epochs": epochs, "batch_size": 32, "lr": 5e-5, "max_length": max_length}
    if new_lr is not None:
        train["new_modules_lr"] = new_lr
    return {
        "model": {"name": "bundled:minilm-l6"},
        "task": {"type": "classification", "text": "text", "label": "label"},
        "data": data,
        "method": {"name": "full"},
        "train": train,
        "output": {"dir": str(out)},
    }


def main() -> None:
    from finetune.commands.run import run

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smaller samples (a busy machine)")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--heads", help="comma-separated head-lr labels to run (default: all)")
    parser.add_argument("--append", action="store_true", help="add to the saved results")
    args = parser.parse_args()
    epochs = args.epochs
    settings = SETTINGS
    if args.heads:
        settings = [s for s in SETTINGS if s[0].split(" ")[0].rstrip(":") in args.heads.split(",")]
    max_length = 24 if args.quick else 48
    saved = RESULTS / f"new_modules_lr{'_quick' if args.quick else ''}.json"
    results: list[dict[str, Any]] = json.loads(saved.read_text()) if args.append else []
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        for name, data in datasets(tmp, args.quick).items():
            for label, new_lr in settings:
                out = tmp / f"{name}-{len(results)}"
                path = tmp / f"{name}-{len(results)}.yaml"
                path.write_text(
                    yaml.safe_dump(recipe(data, new_lr, epochs, out, max_length)), encoding="utf-8"
                )
                started = time.perf_counter()
                summary = run(path, [], overwrite=True, progress=False)
                metrics = json.loads((summary.run_dir / "metrics.json").read_text())
                row = {
                    "data": name,
                    "head lr": label,
                    "accuracy": metrics.get("accuracy"),
                    "eval_loss": metrics.get("loss"),
                    "seconds": round(time.perf_counter() - started, 1),
                }
                print(json.dumps(row), flush=True)
                results.append(row)
                write(results, epochs, args.quick)


def write(results: list[dict[str, Any]], epochs: int, quick: bool) -> None:
    """The table so far (rewritten after every run: a slow machine keeps what finished)."""
    lines = [
        f"# new_modules_lr: full fine-tuning of MiniLM at train.lr 5e-5, {epochs} epoch(s)",
        "",
        f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, "
        f"load average {os.getloadavg()[0]:.1f}",
        "",
        "| data | head lr | accuracy | eval loss |",
        "|---|---|---|---|",
    ]
    for r in results:
        loss = "–" if r["eval_loss"] is None else f"{r['eval_loss']:.3f}"
        lines.append(f"| {r['data']} | {r['head lr']} | {r['accuracy']:.4f} | {loss} |")
    table = "\n".join(lines) + "\n"
    print(table)
    RESULTS.mkdir(parents=True, exist_ok=True)
    suffix = "_quick" if quick else ""
    (RESULTS / f"new_modules_lr{suffix}.md").write_text(table, encoding="utf-8")
    (RESULTS / f"new_modules_lr{suffix}.json").write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
