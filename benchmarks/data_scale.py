"""Cost as data grows: peak memory and tokenisation speed for 10k, 100k and 1M train rows.

Train files are made by repeating the quick-start SST-2 rows. For each size, in a fresh process:
`finetune validate` (every row parsed, none kept) and the data preparation of `finetune run`
(read, normalise, tokenise, hold the features) on the bundled MiniLM tokenizer, with peak RSS
above the process's RSS once the model is loaded; and `datasets.map(batched=True)` with the
same fast tokenizer as the speed reference.

    python benchmarks/data_scale.py                        # 10k, 100k, 1M rows
    python benchmarks/data_scale.py --sizes 10000,100000

Results: stdout and benchmarks/results/data_scale.md. The goal (issue #12): peak RSS above the
loaded model grows by <= 150 MB per million short rows, and tokenisation at least as fast as
`datasets.map`.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
SST2 = REPO / "recipes" / "data" / "sst2"
RESULTS = REPO / "benchmarks" / "results"


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="10000,100000,1000000")
    parser.add_argument("--out", type=Path, default=RESULTS / "data_scale.md")
    parser.add_argument("--one", nargs=3, help=argparse.SUPPRESS)  # internal: kind, file, recipe
    return parser.parse_args()


def rss_mb() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def make_train_file(rows: int, directory: Path) -> Path:
    source = (SST2 / "train.tsv").read_text().splitlines()
    header, body = source[0], source[1:]
    path = directory / f"train_{rows}.tsv"
    with path.open("w") as f:
        f.write(header + "\n")
        for i in range(rows):
            f.write(body[i % len(body)] + "\n")
    return path


def write_recipe(train: Path, directory: Path) -> Path:
    import yaml

    recipe = {
        "model": {"name": "bundled:minilm-l6"},
        "task": {"type": "classification"},
        "data": {"train": str(train), "eval": str(SST2 / "dev.tsv")},
        "method": {"name": "lora"},
        "train": {"max_length": 64},
    }
    path = directory / f"{train.stem}.yaml"
    path.write_text(yaml.safe_dump(recipe))
    return path


def measure_validate(recipe: Path) -> dict[str, Any]:
    from finetune.commands.validate import check_recipe

    start = time.perf_counter()
    _, problems = check_recipe(recipe, [], scan_rows=True)
    return {"seconds": time.perf_counter() - start, "peak_mb": peak_mb(), "problems": len(problems)}


def measure_prepare(recipe_path: Path) -> dict[str, Any]:
    """What `finetune run` does with the data before training, after the model is loaded."""
    from finetune.commands.build import load_splits, make_task, train_features
    from finetune.commands.validate import check_recipe
    from finetune.models.loading import load_base_model, load_tokenizer
    from finetune.models.names import resolve_name
    from finetune.setup.architecture import recipe_architecture

    recipe, _ = check_recipe(recipe_path, [])
    assert recipe is not None
    family = recipe_architecture(recipe)
    task = make_task(recipe, family)
    task.tokenizer = load_tokenizer(resolve_name(recipe.model.name).path)
    load_base_model(resolve_name(recipe.model.name), family, "classification", task.tokenizer)
    base = rss_mb()
    start = time.perf_counter()
    splits = load_splits(task, recipe, recipe_path.parent, stream_train=True)  # pass 1, fit
    read = time.perf_counter() - start
    start = time.perf_counter()
    dataset = train_features(task, splits, cache=True)  # pass 2: tokenise, then cache
    encode = time.perf_counter() - start
    rows = len(dataset)
    peak = peak_mb() - base
    parse = parse_seconds(task, recipe, recipe_path.parent)
    start = time.perf_counter()
    again = load_splits(task, recipe, recipe_path.parent, stream_train=True)
    cached = train_features(task, again, cache=True)  # what a rerun does: scan + memory-map
    assert len(cached) == rows
    return {
        "rows": rows,
        "read_seconds": read,
        "encode_rows_per_s": rows / encode,
        # the tokenisation alone: pass 2 less a pass that only parses and normalises the rows
        "tokenise_rows_per_s": rows / max(encode - parse, 1e-9),
        "cached_seconds": time.perf_counter() - start,
        "peak_above_model_mb": peak,
        "held_after_mb": rss_mb() - base,
    }


def parse_seconds(task: Any, recipe: Any, base_dir: Path) -> float:
    """What pass 2 spends reading and normalising the file, before any tokenisation."""
    from finetune.data.stream import row_chunks

    start = time.perf_counter()
    for table in row_chunks(recipe.data.train, base_dir, recipe.data.max_train_samples):
        task.examples(table, "train")
    return time.perf_counter() - start


def measure_datasets_map(train: Path) -> dict[str, Any]:
    import datasets
    import pandas as pd
    from transformers import AutoTokenizer

    from finetune.models.names import resolve_name

    tokenizer = AutoTokenizer.from_pretrained(resolve_name("bundled:minilm-l6").path)
    frame = pd.read_csv(train, sep="\t", quoting=3)
    ds = datasets.Dataset.from_pandas(frame, preserve_index=False)
    start = time.perf_counter()
    ds.map(
        lambda b: tokenizer(b["text"], truncation=True, max_length=64),
        batched=True,
        keep_in_memory=True,
    )
    return {"map_rows_per_s": len(ds) / (time.perf_counter() - start)}


def run_one(kind: str, train: str, recipe: str) -> dict[str, Any]:
    if kind == "validate":
        return measure_validate(Path(recipe))
    if kind == "prepare":
        return measure_prepare(Path(recipe))
    return measure_datasets_map(Path(train))


def in_subprocess(kind: str, train: Path, recipe: Path) -> dict[str, Any]:
    cmd = [sys.executable, __file__, "--one", kind, str(train), str(recipe)]
    done = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise SystemExit(f"{kind} on {train.name} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    args = parse_args()
    if args.one:
        print(json.dumps(run_one(*args.one)))
        return
    sizes = [int(s) for s in args.sizes.split(",") if s]
    rows = []
    with tempfile.TemporaryDirectory(prefix="finetune-scale-") as tmp_dir:
        tmp = Path(tmp_dir)
        os.environ["FINETUNE_CACHE_DIR"] = str(tmp / "cache")  # a cold cache per benchmark
        for size in sizes:
            train = make_train_file(size, tmp)
            recipe = write_recipe(train, tmp)
            row = {"size": size}
            for kind in ("validate", "prepare", "map"):
                row[kind] = in_subprocess(kind, train, recipe)
            print(size, row, flush=True)
            rows.append(row)
            train.unlink()
    report = render(rows)
    print(report)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(report)


def render(rows: list[dict[str, Any]]) -> str:
    when = dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    load = os.getloadavg()[0]
    lines = [
        f"# Cost as data grows ({when})",
        "",
        f"Machine: {platform.machine()}, {os.cpu_count()} cores; load average at the end "
        f"{load:.1f}. Train rows repeat the quick-start SST-2 rows (about 25 tokens each); "
        "MiniLM tokenizer, max_length 64.",
        "",
        "| train rows | validate s | validate peak RSS MB | prepare: peak RSS above model MB "
        "| MB per million rows (growth over the smallest size) "
        "| our second pass rows/s (read + tokenise + cache write) | our tokenisation alone rows/s "
        "| datasets.map rows/s | rerun: cached features s |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    first = rows[0]
    for row in rows:
        size, prep = row["size"], row["prepare"]
        per_million = prep["peak_above_model_mb"] / size * 1e6
        if size > first["size"]:  # the growth, without the fixed cost the smallest size shows
            grown = prep["peak_above_model_mb"] - first["prepare"]["peak_above_model_mb"]
            per_million = grown / (size - first["size"]) * 1e6
        lines.append(
            f"| {size:,} | {row['validate']['seconds']:.1f} | {row['validate']['peak_mb']:.0f} "
            f"| {prep['peak_above_model_mb']:.0f} | {per_million:.0f} "
            f"| {prep['encode_rows_per_s']:,.0f} | {prep['tokenise_rows_per_s']:,.0f} "
            f"| {row['map']['map_rows_per_s']:,.0f} "
            f"| {prep['cached_seconds']:.2f} |"
        )
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
