"""Every method on the quick-start setup: SST-2 dev accuracy, trainable parameters, adapter size
on disk and training time, as one markdown table.

    python benchmarks/methods_sst2.py                      # every method, the quick-start budget
    python benchmarks/methods_sst2.py --max-train 64 --max-eval 32 --methods lora,houlsby
    python benchmarks/methods_sst2.py --methods new       # only the methods/variants of #27

Rows: every registered method, then LoRA's initialisations (`lora:pissa`, ... `method.init`)
and optimizers (`lora+loraplus`, `lora+lorafa`: `train.optimizer`) at LoRA's default rate.

Each method runs the quick-start recipe (recipes/quickstart.yaml; until it exists, the bundled
MiniLM on an SST-2 sample) with its own method section and learning rate: one learning rate
for all would favour whichever method it was tuned for. Methods the recipe's family/task cannot
serve are listed with the reason. Results go to stdout and to benchmarks/results/.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path
from typing import Any

import yaml

from finetune.comparison.report import human_size
from finetune.methods import METHODS
from finetune.recipe.sections import default_lr

REPO = Path(__file__).resolve().parents[1]
QUICKSTART = REPO / "recipes" / "quickstart.yaml"
RESULTS = REPO / "benchmarks" / "results"

# Per-method options (the others run at their schema defaults), and the learning rates
# `finetune compare` uses (finetune/commands/compare.py): each method's registry default.
METHOD_OPTIONS: dict[str, dict[str, Any]] = {
    "lora": {"r": 8, "alpha": 16},
    "dora": {"r": 8, "alpha": 16},
    "rslora": {"r": 8, "alpha": 16},
    "prefix": {"num_virtual_tokens": 20},
    "prompt": {"num_virtual_tokens": 20},
    "houlsby": {"reduction_factor": 16},
    "pfeiffer": {"reduction_factor": 16},
}
# LoRA's variants: row name -> (method options, train options), at LoRA's default rate
# (scaled by the optimizer's factor, as `run` does when train.lr is unset)
LORA_VARIANTS: dict[str, tuple[dict[str, Any], dict[str, Any]]] = {
    f"lora:{init}": ({"init": init}, {})
    for init in ("gaussian", "orthogonal", "pissa", "olora", "eva", "corda", "loftq")
}
LORA_VARIANTS.update(
    {"lora+loraplus": ({}, {"optimizer": "loraplus"}), "lora+lorafa": ({}, {"optimizer": "lorafa"})}
)
METHOD_SETTINGS: dict[str, tuple[str, dict[str, Any], dict[str, Any], float]] = {
    name: (name, METHOD_OPTIONS.get(name, {}), {}, METHODS[name].default_lr) for name in METHODS
}
METHOD_SETTINGS.update(
    {
        row: (
            "lora",
            {**METHOD_OPTIONS["lora"], **options},
            train,
            default_lr(METHODS["lora"].default_lr, train.get("optimizer", "adamw")),
        )
        for row, (options, train) in LORA_VARIANTS.items()
    }
)


PREVIOUS = (
    "full",
    "lora",
    "dora",
    "rslora",
    "ia3",
    "prefix",
    "prompt",
    "houlsby",
    "pfeiffer",
    "bitfit",
)


def fallback_recipe() -> dict[str, Any]:
    """The quick-start setup until recipes/quickstart.yaml lands: MiniLM, SST-2 sample."""
    sst2 = REPO / "recipes" / "data" / "sst2"
    if not (sst2 / "train.tsv").exists():
        sst2 = REPO.parent / "shared" / "data" / "sst2"
    return {
        "model": {"name": "bundled:minilm-l6"},
        "task": {"type": "classification", "text": "text", "label": "label"},
        "data": {
            "train": str(sst2 / "train.tsv"),
            "eval": str(sst2 / "dev.tsv"),
            "max_train_samples": 4000,
        },
        "method": {"name": "lora"},
        "train": {"epochs": 1, "batch_size": 32, "max_length": 128, "seed": 42},
    }


def absolute_paths(recipe: dict[str, Any], base: Path) -> None:
    """Local data paths resolved against the recipe's directory, so the copy runs anywhere."""
    for split in ("train", "eval", "test"):
        source = recipe.get("data", {}).get(split)
        path = source if isinstance(source, str) else (source or {}).get("path")
        if not path or Path(path).is_absolute():
            continue
        resolved = next((p for p in (Path.cwd() / path, base / path) if p.exists()), base / path)
        if isinstance(source, str):
            recipe["data"][split] = str(resolved)
        else:
            source["path"] = str(resolved)


def method_recipe(base: dict[str, Any], row: str, args: argparse.Namespace, out: Path) -> dict:
    method, options, train, lr = METHOD_SETTINGS[row]
    recipe = json.loads(json.dumps(base))
    recipe["method"] = {"name": method, **options}
    recipe.setdefault("train", {}).update(train)
    recipe["train"]["lr"] = args.lr or lr
    if options.get("init") == "loftq":  # LoftQ corrects a 4-bit base (QLoRA): CUDA only
        recipe.setdefault("model", {})["quantization"] = {"bits": 4}
    data = recipe.setdefault("data", {})
    if args.max_train:
        data["max_train_samples"] = args.max_train
    if args.max_eval:
        data["max_eval_samples"] = args.max_eval
    if args.epochs:
        recipe["train"]["epochs"] = args.epochs
    recipe["output"] = {"dir": str(out / row.replace(":", "-").replace("+", "-"))}
    return recipe


def run_method(recipe: dict[str, Any], method: str, out: Path) -> dict[str, Any]:
    """One run through the normal pipeline; a refused combination becomes a table row."""
    from finetune.commands.run import run
    from finetune.errors import FinetuneError

    path = out / f"{method.replace(':', '-').replace('+', '-')}.yaml"
    path.write_text(yaml.safe_dump(recipe, sort_keys=False), encoding="utf-8")
    started = time.perf_counter()
    try:
        summary = run(path, [], overwrite=True, progress=False)
    except FinetuneError as exc:  # refused by validate (e.g. loftq without a GPU): its reason
        problems = getattr(exc, "problems", None)
        return {"method": method, "error": problems[0].message if problems else exc.message}
    row = finished_row(summary.run_dir, method, recipe)
    return {**row, "wall_seconds": round(time.perf_counter() - started, 1)}


def finished_row(run_dir: Path, method: str, recipe: dict[str, Any]) -> dict[str, Any]:
    metrics = json.loads((run_dir / "metrics.json").read_text(encoding="utf-8"))
    return {
        "method": method,
        "accuracy": metrics.get("accuracy"),
        "trainable": metrics.get("trainable_parameters"),
        "total": metrics.get("total_parameters"),
        "adapter_bytes": metrics.get("artifact_bytes"),
        "train_seconds": metrics.get("train_seconds"),
        "lr": recipe["train"]["lr"],
    }


def reused_row(recipe: dict[str, Any], method: str) -> dict[str, Any] | None:
    """A finished run of exactly this recipe from an earlier, interrupted invocation."""
    run_dir = Path(recipe["output"]["dir"])
    saved = run_dir.parent / f"{run_dir.name}.recipe.json"
    if not (run_dir / ".finished").exists() or not saved.exists():
        return None
    if json.loads(saved.read_text(encoding="utf-8")) != recipe:
        return None
    return finished_row(run_dir, method, recipe)


def run_or_reuse(recipe: dict[str, Any], method: str, out: Path, reuse: bool) -> dict[str, Any]:
    row = reused_row(recipe, method) if reuse else None
    if row is None:
        row = run_method(recipe, method, out)
        run_dir = Path(recipe["output"]["dir"])
        saved = run_dir.parent / f"{run_dir.name}.recipe.json"
        saved.write_text(json.dumps(recipe), encoding="utf-8")
    return row


def grid_rows(
    base: dict[str, Any], method: str, args: argparse.Namespace
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """The method at each --grid-rates rate: (the best row by accuracy, every row)."""
    tried = []
    for rate in [float(r) for r in args.grid_rates.split(",")]:
        recipe = method_recipe(base, method, args, args.out)
        recipe["train"]["lr"] = rate
        recipe["output"]["dir"] += f"-lr{rate:g}"
        tried.append(run_or_reuse(recipe, method, args.out, args.reuse))
    ran = [row for row in tried if "error" not in row]
    best = max(ran, key=lambda row: row["accuracy"]) if ran else tried[0]
    return best, tried


def render(rows: list[dict[str, Any]]) -> str:
    lines = [
        "| method | SST-2 dev accuracy | trainable parameters | % of total | adapter on disk "
        "| train time | lr |",
        "|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        if "error" in row:
            lines.append(f"| `{row['method']}` | not run: {row['error']} | | | | | |")
            continue
        lines.append(
            f"| `{row['method']}` | {row['accuracy']:.4f} | {row['trainable']:,} | "
            f"{100 * row['trainable'] / row['total']:.3f}% | {human_size(row['adapter_bytes'])} | "
            f"{row['train_seconds']:.0f} s | {row['lr']:g} |"
        )
    return "\n".join(lines) + "\n"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--recipe", type=Path, default=None, help="default: quick-start recipe")
    parser.add_argument("--methods", default=",".join(METHOD_SETTINGS), help="comma-separated")
    parser.add_argument("--max-train", type=int, default=None, help="training rows (sample)")
    parser.add_argument("--max-eval", type=int, default=None, help="dev rows")
    parser.add_argument("--epochs", type=int, default=None)
    parser.add_argument("--lr", type=float, default=None, help="one lr for every method")
    parser.add_argument("--out", type=Path, default=REPO / "runs" / "bench_methods_sst2")
    parser.add_argument("--no-save", action="store_true", help="do not write benchmarks/results")
    parser.add_argument("--name", default="methods_sst2", help="results file name (no suffix)")
    parser.add_argument("--grid-methods", default="", help="run these at every --grid-rates")
    parser.add_argument("--grid-rates", default="5e-4,2e-3,8e-3", help="comma-separated")
    parser.add_argument("--reuse", action="store_true", help="keep finished runs of a recipe")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    recipe_path = args.recipe or (QUICKSTART if QUICKSTART.exists() else None)
    if recipe_path is not None:
        base = yaml.safe_load(recipe_path.read_text(encoding="utf-8"))
        absolute_paths(base, recipe_path.resolve().parent)
    else:
        base = fallback_recipe()
    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    if methods == ["new"]:  # only what the last round added (issue #27)
        methods = [m for m in METHOD_SETTINGS if m not in PREVIOUS]
    unknown = [m for m in methods if m not in METHOD_SETTINGS]
    if unknown:
        raise SystemExit(f"unknown methods: {', '.join(unknown)}")
    args.out.mkdir(parents=True, exist_ok=True)
    load_before, started = os.getloadavg()[0], time.strftime("%Y-%m-%d %H:%M")
    rows, grids = [], []
    grid_methods = [m for m in args.grid_methods.split(",") if m]
    for method in methods:
        print(f"--- {method}", file=sys.stderr, flush=True)
        if method in grid_methods:
            best, tried = grid_rows(base, method, args)
            rows.append(best)
            grids += tried
        else:
            recipe = method_recipe(base, method, args, args.out)
            rows.append(run_or_reuse(recipe, method, args.out, args.reuse))
    table = render(rows)
    if grids:
        table += (
            "\nLearning-rate grid (" + ", ".join(grid_methods) + "; the best rate is the row "
            "above):\n\n" + render(grids)
        )
    header = (
        f"Recipe: {recipe_path or 'built-in quick-start fallback'}; "
        f"train rows: {args.max_train or base.get('data', {}).get('max_train_samples', 'all')}; "
        f"{platform.processor() or platform.machine()}, torch threads as set by OMP_NUM_THREADS; "
        f"{os.cpu_count()} cores, started {started}, 1-minute load {load_before:.1f} at the start, "
        f"{os.getloadavg()[0]:.1f} at the end (other jobs shared the CPU when load > cores: "
        "train times are then stretched unevenly)\n\n"
    )
    sys.stdout.write(header + table)
    if not args.no_save:
        RESULTS.mkdir(parents=True, exist_ok=True)
        (RESULTS / f"{args.name}.md").write_text(header + table, encoding="utf-8")
        dumped = json.dumps({"rows": rows, "grid": grids}, indent=2) + "\n"
        (RESULTS / f"{args.name}.json").write_text(dumped, "utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
