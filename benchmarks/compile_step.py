"""Does `train.compile` pay back its compile time on the quick-start training step? (#12, #24)

The quick-start model (bundled MiniLM + LoRA r8 query/value, the classifier head trained) on
quick-start batches (length-grouped SST-2 rows, batch 32, max_length 64) on the CPU, in the
precision `train.precision: auto` picks here (bf16 autocast where the CPU has AVX512-BF16/AMX,
else fp32; `--precision` to force one): the eager step vs finetune's compiled step
(finetune/train/compiled.py: each transformer block compiled in place, one dynamic graph),
first with an empty inductor cache (`cold`), then in a fresh process with the cache the first
one filled (`warm`, what a second `finetune run` of the same model sees). Reports the compile
time of each (first steps less their steady time), the steady step times, and after how many
steps each pays back: the numbers `train.compile: auto` decides with (COLD_PAYBACK_STEPS,
WARM_PAYBACK_STEPS).

    python benchmarks/compile_step.py                 # 60 timed steps each
    python benchmarks/compile_step.py --steps 10
"""

from __future__ import annotations

import argparse
import platform
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
TRAIN = REPO / "recipes" / "data" / "sst2" / "train.tsv"


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--warmup", type=int, default=3, help="steps before timing (compiles)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--precision", choices=["auto", "fp32", "bf16"], default="auto")
    parser.add_argument("--one", choices=["eager", "cold", "warm"], help=argparse.SUPPRESS)
    parser.add_argument("--cache", help=argparse.SUPPRESS)
    return parser.parse_args()


def batches(tokenizer: Any, count: int) -> list[dict[str, Any]]:
    """`count` quick-start batches: 32 rows of similar length each, in a shuffled order."""
    import random

    import torch

    lines = TRAIN.read_text(encoding="utf-8").splitlines()[1:]
    rows = [line.rsplit("\t", 1) for line in lines[: 32 * count * 4]]
    rows.sort(key=lambda r: len(r[0]))
    groups = [rows[i : i + 32] for i in range(0, len(rows), 32)][: count * 4]
    random.Random(0).shuffle(groups)
    out = []
    for group in groups[:count]:
        enc = tokenizer(
            [t for t, _ in group], truncation=True, max_length=64, padding=True, return_tensors="pt"
        )
        enc["labels"] = torch.tensor([int(label) for _, label in group])
        out.append(dict(enc))
    return out


def model_and_optimizer() -> tuple[Any, Any]:
    import torch
    from peft import LoraConfig, TaskType, get_peft_model
    from transformers import AutoModelForSequenceClassification

    from finetune.models.names import resolve_name

    torch.manual_seed(0)
    path = resolve_name("bundled:minilm-l6").path
    base = AutoModelForSequenceClassification.from_pretrained(path, num_labels=2)
    config = LoraConfig(
        task_type=TaskType.SEQ_CLS, r=8, lora_alpha=16, target_modules=["query", "value"]
    )
    model = get_peft_model(base, config).train()
    trainable = [p for p in model.parameters() if p.requires_grad]
    return model, torch.optim.AdamW(trainable, lr=2e-3)


def timed_steps(model: Any, optimizer: Any, data: list[dict[str, Any]], bf16: bool) -> list[float]:
    import torch

    out = []
    for batch in data:
        start = time.perf_counter()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            loss = model(**batch).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        out.append(time.perf_counter() - start)
    return out


def precision(choice: str) -> bool:
    """Whether to run in bf16: `auto` as finetune decides it on this CPU."""
    if choice != "auto":
        return choice == "bf16"
    from finetune.train.precision import cpu_native_bf16

    return cpu_native_bf16()


def one(label: str, args: argparse.Namespace) -> None:
    """One measurement in this fresh process: (warm-up seconds, median step) as JSON."""
    import json
    import statistics

    import torch
    from transformers import AutoTokenizer

    from finetune.models.names import resolve_name
    from finetune.train.compiled import CompilePlan, compile_model

    torch.set_num_threads(args.threads)
    tokenizer = AutoTokenizer.from_pretrained(resolve_name("bundled:minilm-l6").path)
    data = batches(tokenizer, args.warmup + args.steps)
    model, optimizer = model_and_optimizer()
    if label != "eager":
        compile_model(model, CompilePlan(True, "benchmark", "bench"))
    times = timed_steps(model, optimizer, data, precision(args.precision))
    print(json.dumps([sum(times[: args.warmup]), statistics.median(times[args.warmup :])]))


def main() -> None:
    import json
    import os
    import subprocess
    import sys
    import tempfile

    import torch

    args = parse_args()
    if args.one:
        one(args.one, args)
        return
    results = {}
    with tempfile.TemporaryDirectory(prefix="finetune-compile-") as cache:
        env = {**os.environ, "TORCHINDUCTOR_CACHE_DIR": cache}
        for label in ("eager", "cold", "warm"):
            cmd = [sys.executable, __file__, "--one", label, "--steps", str(args.steps),
                   "--warmup", str(args.warmup), "--threads", str(args.threads),
                   "--precision", args.precision]  # fmt: skip
            done = subprocess.run(cmd, capture_output=True, text=True, env=env, check=True)
            results[label] = json.loads(done.stdout.strip().splitlines()[-1])
    eager = results["eager"][1]
    bf16 = precision(args.precision)
    print(
        f"train.compile on the quick-start step: MiniLM + LoRA r8, batch 32, "
        f"{'bf16' if bf16 else 'fp32'}, {args.threads} threads, {args.steps} timed steps after "
        f"{args.warmup}"
    )
    print(
        f"machine: {platform.machine()}, torch {torch.__version__}, load {os.getloadavg()[0]:.1f}"
    )
    print(f"eager step (median): {eager * 1000:.0f} ms")
    for label in ("cold", "warm"):
        warmup, step = results[label]
        first = warmup - args.warmup * step
        print(f"{label}: compiled step (median) {step * 1000:.0f} ms ({eager / step:.2f}x), "
              f"compile time {first:.0f} s", end="")  # fmt: skip
        if step < eager:
            print(f", pays back after {first / (eager - step):.0f} steps")
        else:
            print(", never pays back: the compiled step is not faster")
    print(f"(the quick start trains {10000 // 32 + 1} steps)")


if __name__ == "__main__":
    main()
