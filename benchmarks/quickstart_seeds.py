"""The quick start over N seeds: mean ± std SST-2 dev accuracy and training time per recipe.

    python benchmarks/quickstart_seeds.py --precision fp32 --before      # today's vs before
    python benchmarks/quickstart_seeds.py --precision auto --before --seeds 3
    python benchmarks/quickstart_seeds.py --variant "r16: method.r=16" --seeds 2

One accuracy on 872 dev sentences has a ±1.2-point 95% interval and moves by about as much
with the seed (initialisation, data order, dropout), so a recipe change is judged on the mean
over seeds. Each run is one `python -m finetune run recipes/quickstart.yaml <overrides>`
subprocess (what a user runs), seeds `train.seed`, `train.seed`+1, ...; with several variants
the runs are interleaved seed by seed (A42 B42 A43 B43 ...), so a change of machine load
stretches every variant alike. Each row records `train_seconds` (metrics.json), the process's
wall and CPU time and the 1-minute load average before and after. Results: stdout and
benchmarks/results/quickstart_seeds_<precision>.{md,json}, rewritten after every run.

`--before` adds the quick-start recipe as it was before the issue #24 re-tune (r=8 on
query/value, lr 2e-3, head at the default max(lr, 3e-3)) as overrides on the current file.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import statistics
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results"
QUICKSTART = Path("recipes") / "quickstart.yaml"

# recipes/quickstart.yaml before the issue #24 re-tune, as overrides on whatever it is now
BEFORE = (
    "method.r=8",
    "method.alpha=16",
    "method.dropout=0.0",
    "method.target_modules=auto",
    "train.lr=0.002",
    "train.new_modules_lr=null",
)
CURRENT = "current"


def parse_variant(text: str) -> tuple[str, list[str]]:
    """`label: key=value key=value` -> (label, overrides)."""
    label, sep, rest = text.partition(":")
    if not sep or not label.strip():
        raise SystemExit(f"--variant {text!r}: write it as 'label: key=value key=value'")
    overrides = rest.split()
    bad = [o for o in overrides if "=" not in o]
    if bad:
        raise SystemExit(f"--variant {label}: {bad[0]!r} is not key=value")
    return label.strip(), overrides


def cpu_name() -> str:
    try:
        lines = Path("/proc/cpuinfo").read_text(errors="replace").splitlines()
    except OSError:
        return platform.processor() or platform.machine()
    names = [line.split(":", 1)[1].strip() for line in lines if line.startswith("model name")]
    return names[0] if names else platform.machine()


def machine_line() -> str:
    """CPU, cores and whether bf16 is native here: what decides `precision: auto`."""
    import torch

    from finetune.train.precision import cpu_native_bf16

    native = "AVX512-BF16/AMX: yes" if cpu_native_bf16() else "AVX512-BF16/AMX: no"
    return (
        f"{cpu_name()}, {os.cpu_count()} cores ({native}), torch {torch.__version__}, "
        f"Python {platform.python_version()}, {time.strftime('%Y-%m-%d')}"
    )


def run_once(
    recipe: Path, label: str, overrides: list[str], seed: int, precision: str, work: Path
) -> dict[str, Any]:
    """One `finetune run` of the variant at this seed; accuracy and times from its files."""
    from finetune.comparison.runner import timed_run

    out = work / f"{label}-seed{seed}"
    cmd = [sys.executable, "-m", "finetune", "run", str(recipe), *overrides]
    cmd += [f"train.seed={seed}", f"train.precision={precision}", f"output.dir={out}"]
    cmd += ["--no-progress", "--overwrite"]
    code, timing = timed_run(cmd, work / f"{label}-seed{seed}.log", {})
    row: dict[str, Any] = {"variant": label, "seed": seed, "overrides": overrides}
    row.update(wall_s=timing.wall_seconds, cpu_s=timing.cpu_seconds)
    row.update(load_before=round(timing.load_before, 2), load_after=round(timing.load_after, 2))
    if code != 0:
        row["error"] = f"exit {code}: see {work / f'{label}-seed{seed}.log'}"
        return row
    metrics = json.loads((out / "metrics.json").read_text(encoding="utf-8"))
    for key in ("accuracy", "f1_macro", "train_seconds", "train_samples_per_s", "steps"):
        row[key] = metrics.get(key)
    row["trainable"] = metrics.get("trainable_parameters")
    row["precision"] = {"no": "fp32"}.get(metrics.get("mixed_precision"), "bf16")
    return row


def mean_std(values: list[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (n-1), 0 for one value."""
    if not values:
        return float("nan"), float("nan")
    return statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else 0.0


def summary(rows: list[dict[str, Any]], labels: list[str]) -> list[dict[str, Any]]:
    """Per variant: mean ± std accuracy and train time, the per-seed accuracies, the load."""
    out = []
    for label in labels:
        done = [r for r in rows if r["variant"] == label and "accuracy" in r]
        if not done:
            continue
        acc, acc_std = mean_std([r["accuracy"] for r in done])
        secs, secs_std = mean_std([r["train_seconds"] for r in done])
        cpu, _ = mean_std([r["cpu_s"] for r in done])
        loads = [x for r in done for x in (r["load_before"], r["load_after"])]
        out.append(
            {
                "variant": label,
                "overrides": done[0]["overrides"],
                "seeds": [r["seed"] for r in done],
                "per_seed": [r["accuracy"] for r in done],
                "accuracy_mean": acc,
                "accuracy_std": acc_std,
                "train_seconds_mean": secs,
                "train_seconds_std": secs_std,
                "cpu_seconds_mean": cpu,
                "load_min": min(loads),
                "load_max": max(loads),
                "trainable": done[0]["trainable"],
            }
        )
    return out


def markdown(rows: list[dict[str, Any]], labels: list[str], header: list[str]) -> str:
    lines = [
        *header,
        "",
        "| variant | overrides on the recipe | trainable | seeds | accuracy per seed "
        "| accuracy mean ± std | train s mean ± std | CPU s (mean) | load |",
    ]
    lines.append("|---|---|---|---|---|---|---|---|---|")
    summaries = summary(rows, labels)
    base = summaries[0]["train_seconds_mean"] if summaries else None
    for s in summaries:
        per_seed = ", ".join(f"{a:.4f}" for a in s["per_seed"])
        first = s is summaries[0]
        ratio = "" if first or not base else f" ({s['train_seconds_mean'] / base:.2f}×)"
        lines.append(
            f"| {s['variant']} | {' '.join(s['overrides']) or '(as is)'} | {s['trainable']:,} | "
            f"{len(s['seeds'])} | {per_seed} | **{s['accuracy_mean']:.4f}** ± "
            f"{s['accuracy_std']:.4f} | {s['train_seconds_mean']:.0f} ± "
            f"{s['train_seconds_std']:.0f}{ratio} | {s['cpu_seconds_mean']:.0f} | "
            f"{s['load_min']:.1f}-{s['load_max']:.1f} |"
        )
    lines += ["", "Every run, in the order it ran:", ""]
    lines.append(
        "| variant | seed | precision | accuracy | macro-F1 | train s | samples/s | wall s "
        "| CPU s | load before → after |"
    )
    lines.append("|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        if "error" in r:
            lines.append(f"| {r['variant']} | {r['seed']} | – | {r['error']} | | | | | | |")
            continue
        lines.append(
            f"| {r['variant']} | {r['seed']} | {r['precision']} | {r['accuracy']:.4f} | "
            f"{r['f1_macro']:.4f} | {r['train_seconds']:.1f} | {r['train_samples_per_s']:.1f} | "
            f"{r['wall_s']:.0f} | {r['cpu_s']:.0f} | {r['load_before']:.1f} → "
            f"{r['load_after']:.1f} |"
        )
    return "\n".join(lines) + "\n"


def write(rows: list[dict[str, Any]], labels: list[str], header: list[str], stem: Path) -> None:
    """The table so far, rewritten after every run: a slow machine keeps what finished."""
    stem.parent.mkdir(parents=True, exist_ok=True)
    stem.with_suffix(".md").write_text(markdown(rows, labels, header), encoding="utf-8")
    data = {"header": header, "summary": summary(rows, labels), "runs": rows}
    stem.with_suffix(".json").write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")


def main() -> None:
    from finetune.train.precision import resolve_precision

    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--recipe", type=Path, default=QUICKSTART)
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--first-seed", type=int, default=42, help="the recipe's train.seed")
    parser.add_argument("--precision", choices=["auto", "fp32", "bf16"], default="auto")
    parser.add_argument("--before", action="store_true", help="also the pre-re-tune recipe")
    parser.add_argument("--variant", action="append", default=[], help="'label: k=v k=v'")
    parser.add_argument("--no-current", action="store_true", help="only the variants")
    parser.add_argument(
        "--set", action="append", default=[], help="k=v for every run (a smoke test)"
    )
    parser.add_argument("--work", type=Path, default=Path("runs") / "quickstart_seeds")
    parser.add_argument("--note", default="", help="a line for the results (e.g. the load)")
    parser.add_argument("--results", type=Path, default=RESULTS, help="folder for the tables")
    args = parser.parse_args()
    os.chdir(REPO)  # the recipe's relative data paths, as a user runs it from the clone
    variants: list[tuple[str, list[str]]] = [] if args.no_current else [(CURRENT, [])]
    if args.before:
        variants.insert(0, ("before", list(BEFORE)))
    variants += [parse_variant(v) for v in args.variant]
    variants = [(label, overrides + args.set) for label, overrides in variants]
    labels = [label for label, _ in variants]
    resolved = resolve_precision(args.precision, None)
    work = args.work / resolved
    work.mkdir(parents=True, exist_ok=True)
    seeds = [args.first_seed + i for i in range(args.seeds)]
    header = [
        f"# {args.recipe} over {len(seeds)} seeds ({', '.join(map(str, seeds))}), "
        f"train.precision={args.precision} (ran as {resolved})",
        "",
        f"`python benchmarks/quickstart_seeds.py {shlex.join(sys.argv[1:])}` on {machine_line()}.",
        "Runs interleaved seed by seed; times are `train_seconds` from metrics.json (the loop "
        "only), CPU s is the process's user+system time; load is the 1-minute load average "
        f"over {os.cpu_count()} cores (above the core count, other jobs shared the CPU and "
        "stretched every time).",
    ]
    if args.note:
        header += ["", args.note]
    rows: list[dict[str, Any]] = []
    for seed in seeds:
        for label, overrides in variants:
            row = run_once(args.recipe, label, overrides, seed, args.precision, work)
            print(json.dumps(row), flush=True)
            rows.append(row)
            write(rows, labels, header, args.results / f"quickstart_seeds_{resolved}")
    print(markdown(rows, labels, header))


if __name__ == "__main__":
    main()
