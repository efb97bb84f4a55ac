"""Training throughput: `finetune run` vs `transformers.Trainer` + peft on the quick-start setup.

Same model (bundled MiniLM), data (recipes/data/sst2), LoRA (the recipe's r and alpha on
query/value, no dropout), lr, batch, epochs and seed on every side. Reports train samples/s,
SST-2 dev accuracy, the wall time of the whole `finetune run` (load, tokenise, train, eval,
save), and the share of the matmul ceiling of the precision used (measured here, not quoted).

    python benchmarks/train_throughput.py                       # the four configurations
    python benchmarks/train_throughput.py --max-train 640 --configs ours,trainer_default

Configurations: `ours` (the recipe's defaults, precision auto), `ours_bf16`
(`train.precision=bf16`), `ours_compiled_cold` and `ours_compiled_warm` (`train.compile=true`,
run in this order with one fresh finetune cache: the first compiles and caches, the second
loads the compiled code as any later run would), `trainer_default` (Trainer out of the box:
random sampler, fp32) and `trainer_best` (`train_sampling_strategy="group_by_length"`, plus bf16
where the hardware has it). "process s" is the whole process, from Python's start to its end
(imports, load, tokenise, train, evaluate, save): what a user waits for. Results: stdout and
benchmarks/results/train_throughput.md (appended). Never a test: timings depend on the machine
and its load; run it on a quiet one.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[1]
QUICKSTART = REPO / "recipes" / "quickstart.yaml"
RESULTS = REPO / "benchmarks" / "results"
CONFIGS = (
    "ours",
    "ours_bf16",
    "ours_compiled_cold",
    "ours_compiled_warm",
    "trainer_default",
    "trainer_best",
)


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--configs", default=",".join(CONFIGS))
    parser.add_argument("--max-train", type=int, default=None, help="train rows (default: all)")
    parser.add_argument(
        "--rounds",
        type=int,
        default=1,
        help="run the configurations this many times, interleaved, and report each round's "
        "ratio and their median (a shared host's speed can halve between minutes)",
    )
    parser.add_argument(
        "--fp32",
        action="store_true",
        help="both sides in fp32 (ours with train.precision=fp32, the Trainer without bf16): "
        "what an fp32-only CPU computes, reproduced on one with native bf16",
    )
    parser.add_argument("--out", type=Path, default=RESULTS / "train_throughput.md")
    parser.add_argument("--one", help=argparse.SUPPRESS)  # internal: run one configuration
    return parser.parse_args()


def gemm_ceiling(dtype_name: str, n: int = 1024, repeats: int = 20) -> float:
    """GFLOP/s of a square matmul in this precision on this CPU (best of `repeats`)."""
    import torch

    dtype = {"fp32": torch.float32, "bf16": torch.bfloat16}[dtype_name]
    a, b = torch.randn(n, n, dtype=dtype), torch.randn(n, n, dtype=dtype)
    torch.matmul(a, b)
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        torch.matmul(a, b)
        best = min(best, time.perf_counter() - start)
    return 2 * n**3 / best / 1e9


def cpu_has_bf16() -> bool:
    flags = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else ""
    return "avx512_bf16" in flags or "amx_bf16" in flags


def recipe_settings(max_train: int | None) -> dict[str, Any]:
    recipe = yaml.safe_load(QUICKSTART.read_text())
    for split in ("train", "eval"):
        recipe["data"][split] = str(REPO / recipe["data"][split])
    if max_train:
        recipe["data"]["max_train_samples"] = max_train
    return recipe


def run_ours(
    recipe: dict[str, Any], precision: str | None, tmp: Path, compiled: bool = False
) -> dict[str, Any]:
    from finetune.commands.run import run

    recipe = json.loads(json.dumps(recipe))
    recipe["output"] = {"dir": str(tmp / f"ours-{precision or 'auto'}")}
    if precision:
        recipe["train"]["precision"] = precision
    if compiled:
        recipe["train"]["compile"] = True
    path = tmp / f"ours-{precision or 'auto'}.yaml"
    path.write_text(yaml.safe_dump(recipe))
    started = time.perf_counter()
    summary = run(path, progress=False)
    wall = time.perf_counter() - started
    metrics = summary.metrics
    return {
        "samples_per_s": metrics["train_samples_per_s"],
        "accuracy": metrics["accuracy"],
        "train_seconds": metrics["train_seconds"],
        "wall_seconds": round(wall, 1),
        "precision": precision or "auto",
    }


def tokenised(recipe: dict[str, Any], tokenizer: Any) -> tuple[Any, Any, float]:
    """datasets.Dataset train/dev with `map(batched=True)`, and real tokens per train row."""
    import datasets
    import pandas as pd

    def load(path: str, limit: int | None) -> Any:
        frame = pd.read_csv(path, sep="\t", quoting=3)
        frame = frame.head(limit) if limit else frame
        return datasets.Dataset.from_pandas(frame, preserve_index=False)

    max_length = recipe["train"]["max_length"]

    def encode(batch: dict[str, list]) -> dict[str, list]:
        out = tokenizer(batch["text"], truncation=True, max_length=max_length)
        out["labels"] = batch["label"]
        return out

    train = load(recipe["data"]["train"], recipe["data"].get("max_train_samples"))
    dev = load(recipe["data"]["eval"], None)
    train = train.map(encode, batched=True, remove_columns=train.column_names)
    dev = dev.map(encode, batched=True, remove_columns=dev.column_names)
    tokens = sum(len(ids) for ids in train["input_ids"]) / len(train)
    return train, dev, tokens


def run_trainer(recipe: dict[str, Any], best: bool, bf16: bool, tmp: Path) -> dict[str, Any]:
    import numpy as np
    from peft import LoraConfig, get_peft_model
    from transformers import (
        AutoModelForSequenceClassification,
        AutoTokenizer,
        DataCollatorWithPadding,
        Trainer,
        TrainingArguments,
    )

    from finetune.models.names import resolve_name

    path = resolve_name(recipe["model"]["name"]).path
    tokenizer = AutoTokenizer.from_pretrained(path)
    train, dev, _ = tokenised(recipe, tokenizer)
    model = AutoModelForSequenceClassification.from_pretrained(path, num_labels=2)
    lora = LoraConfig(
        task_type="SEQ_CLS",
        r=recipe["method"]["r"],
        lora_alpha=recipe["method"]["alpha"],
        lora_dropout=recipe["method"].get("dropout", 0.0),
        target_modules=["query", "value"],
        modules_to_save=["classifier"],
    )
    model = get_peft_model(model, lora)
    args = TrainingArguments(
        output_dir=str(tmp / f"trainer-{best}"),
        per_device_train_batch_size=recipe["train"]["batch_size"],
        per_device_eval_batch_size=64,
        learning_rate=recipe["train"]["lr"],
        num_train_epochs=recipe["train"]["epochs"],
        warmup_steps=0.06,  # a float below 1 is a fraction of the steps (transformers 5)
        lr_scheduler_type="linear",
        weight_decay=0.0,
        max_grad_norm=1.0,
        seed=recipe["train"]["seed"],
        use_cpu=True,
        bf16=bf16,
        train_sampling_strategy="group_by_length" if best else "random",
        report_to=[],
        save_strategy="no",
        eval_strategy="no",
        logging_steps=50,
        dataloader_num_workers=0,
    )
    trainer = Trainer(
        model=model,
        args=args,
        train_dataset=train,
        data_collator=DataCollatorWithPadding(tokenizer),
    )
    result = trainer.train()
    predictions = trainer.predict(dev)
    accuracy = float(np.mean(predictions.predictions.argmax(-1) == predictions.label_ids))
    return {
        "samples_per_s": round(result.metrics["train_samples_per_second"], 2),
        "accuracy": round(accuracy, 4),
        "train_seconds": round(result.metrics["train_runtime"], 2),
        "wall_seconds": None,
        "precision": "bf16" if bf16 else "fp32",
    }


def utilisation(samples_per_s: float, tokens_per_row: float, ceiling: float) -> float:
    """Share of the matmul ceiling: a frozen-backbone LoRA step costs ~4 x params FLOPs per
    token (forward, plus the backward pass for activations; frozen weights get no gradient)."""
    params = 22.7e6 - 30522 * 384  # MiniLM-L6 matmul parameters (word embeddings excluded)
    return samples_per_s * tokens_per_row * 4 * params / (ceiling * 1e9)


def run_one(name: str, max_train: int | None, fp32: bool) -> dict[str, Any]:
    """One configuration in this (fresh) process: Accelerate's state is one per process."""
    recipe = recipe_settings(max_train)
    with tempfile.TemporaryDirectory(prefix="finetune-bench-") as tmp_dir:
        tmp = Path(tmp_dir)
        if name == "ours":
            return run_ours(recipe, "fp32" if fp32 else None, tmp)
        if name == "ours_bf16":
            return run_ours(recipe, "bf16", tmp)
        if name.startswith("ours_compiled"):
            return run_ours(recipe, "fp32" if fp32 else None, tmp, compiled=True)
        if name == "trainer_default":
            return run_trainer(recipe, best=False, bf16=False, tmp=tmp)
        if name == "trainer_best":
            return run_trainer(recipe, best=True, bf16=cpu_has_bf16() and not fp32, tmp=tmp)
    raise SystemExit(f"unknown configuration {name!r}; choose from {', '.join(CONFIGS)}")


def run_in_subprocess(name: str, max_train: int | None, cache: Path, fp32: bool) -> dict[str, Any]:
    """One configuration in a fresh process; the compiled ones share `cache` (cold, then warm)."""
    cmd = [sys.executable, __file__, "--one", name] + (["--fp32"] if fp32 else [])
    if max_train:
        cmd += ["--max-train", str(max_train)]
    env = {**os.environ}
    if name.startswith("ours_compiled"):
        env.update(FINETUNE_CACHE_DIR=str(cache), TORCHINDUCTOR_CACHE_DIR=str(cache / "inductor"))
    started = time.perf_counter()
    done = subprocess.run(cmd, capture_output=True, text=True, check=False, env=env)
    process = time.perf_counter() - started
    if done.returncode != 0:
        raise SystemExit(f"{name} failed:\n{done.stderr[-3000:]}")
    row = json.loads(done.stdout.strip().splitlines()[-1])
    row["process_seconds"] = round(process, 1)
    print(name, row, flush=True)
    return row


def main() -> None:
    args = parse_args()
    if args.one:
        print(json.dumps(run_one(args.one, args.max_train, args.fp32)))
        return
    import torch

    torch.manual_seed(0)
    recipe = recipe_settings(args.max_train)
    names = [c for c in args.configs.split(",") if c]
    bf16 = cpu_has_bf16()
    if args.fp32 and "ours_bf16" in names:
        names.remove("ours_bf16")
    if not bf16 and "ours_bf16" in names:  # emulated bf16 runs many times slower than fp32
        print("no native bf16 on this CPU: skipping ours_bf16", flush=True)
        names.remove("ours_bf16")
    ceilings = {"fp32": gemm_ceiling("fp32")}
    ceilings["bf16"] = gemm_ceiling("bf16") if bf16 else float("nan")
    from transformers import AutoTokenizer

    from finetune.models.names import resolve_name

    tok = AutoTokenizer.from_pretrained(resolve_name(recipe["model"]["name"]).path)
    _, _, tokens_per_row = tokenised(recipe, tok)
    rounds = []
    for _ in range(args.rounds):
        with tempfile.TemporaryDirectory(prefix="finetune-compile-cache-") as cache:
            rounds.append(
                {
                    name: run_in_subprocess(name, args.max_train, Path(cache), args.fp32)
                    for name in names
                }
            )
    report = render(rounds[0], ceilings, tokens_per_row, bf16, recipe, args.fp32)
    if args.rounds > 1:
        report += "\n" + render_rounds(rounds)
    print(report)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    with args.out.open("a") as handle:  # appended: the file is the history of every sitting
        handle.write(report + "\n")


def render(
    rows: dict[str, dict[str, Any]],
    ceilings: dict[str, float],
    tokens_per_row: float,
    bf16: bool,
    recipe: dict[str, Any],
    fp32: bool = False,
) -> str:
    when = dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    lines = [
        f"# Training throughput ({when})",
        "",
        f"Machine: {platform.machine()}, {os.cpu_count()} cores, {platform.processor() or ''} "
        f"AVX512-BF16/AMX: {'yes' if bf16 else 'no'}; load average at the end: {load:.1f}.",
        f"Matmul ceiling: fp32 {ceilings['fp32']:.0f} GFLOP/s, bf16 {ceilings['bf16']:.0f} "
        f"GFLOP/s (nan: not native here, not measured). Real tokens per train row: "
        f"{tokens_per_row:.1f}. Train rows: "
        f"{recipe['data'].get('max_train_samples') or 'all (10,000)'}; batch "
        f"{recipe['train']['batch_size']}, lr {recipe['train']['lr']}, one epoch."
        + (" `--fp32`: both sides forced to fp32, as an fp32-only CPU runs." if fp32 else ""),
        "",
        "| configuration | precision | train samples/s | SST-2 dev acc | train s | whole run s "
        "| process s | share of ceiling |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name, row in rows.items():
        ceiling = ceilings["bf16" if row["precision"] == "bf16" else "fp32"]
        share = utilisation(row["samples_per_s"], tokens_per_row, ceiling)
        wall = row["wall_seconds"] if row["wall_seconds"] is not None else "-"
        lines.append(
            f"| {name} | {row['precision']} | {row['samples_per_s']:.1f} | {row['accuracy']:.4f} "
            f"| {row['train_seconds']:.1f} | {wall} | {row.get('process_seconds', '-')} "
            f"| {share:.2f} |"
        )
    lines.append("")
    for ours in ("ours", "ours_compiled_cold", "ours_compiled_warm"):
        if "trainer_best" in rows and ours in rows:
            ratio = rows[ours]["samples_per_s"] / rows["trainer_best"]["samples_per_s"]
            whole = rows[ours]["process_seconds"] / rows["trainer_best"]["process_seconds"]
            lines.append(
                f"{ours} / trainer_best: {ratio:.2f}x samples/s, {whole:.2f}x the process time"
            )
    if "trainer_default" in rows and "ours" in rows:
        ratio = rows["ours"]["samples_per_s"] / rows["trainer_default"]["samples_per_s"]
        lines += [f"ours / trainer_default: {ratio:.2f}x"]
    return "\n".join(lines) + "\n"


def render_rounds(rounds: list[dict[str, dict[str, Any]]]) -> str:
    """Every round's samples/s per configuration, then ours / trainer_best per round and the
    median of those ratios: the configurations alternate, so each ratio compares neighbours in
    time, not a fast minute of the host against a slow one."""
    names = list(rounds[0])
    lines = [
        f"{len(rounds)} interleaved rounds (the configurations in order, then again), train "
        "samples/s:",
        "",
        "| round | " + " | ".join(names) + " | ours / trainer_best |",
        "|---" * (len(names) + 2) + "|",
    ]
    ratios = []
    for i, rows in enumerate(rounds, 1):
        cells = [f"{rows[n]['samples_per_s']:.1f}" for n in names]
        ratio = "-"
        if "ours" in rows and "trainer_best" in rows:
            ratios.append(rows["ours"]["samples_per_s"] / rows["trainer_best"]["samples_per_s"])
            ratio = f"{ratios[-1]:.2f}x"
        lines.append(f"| {i} | " + " | ".join(cells) + f" | {ratio} |")
    if ratios:
        median = statistics.median(ratios)
        lines += ["", f"Median ours / trainer_best over the rounds: {median:.2f}x"]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
