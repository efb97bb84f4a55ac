"""Does `torch.compile` pay back its compile time on the quick-start training step? (issue #12)

The quick-start model (bundled MiniLM + LoRA r8 query/value, the classifier head trained) on
quick-start batches (length-grouped SST-2 rows, batch 32, max_length 64), fp32 on the CPU: the
eager step vs the step of `torch.compile(model, dynamic=True)` (inductor; one graph for every
length, so no recompile per length bucket). Reports the compile time (first steps), the steady
step time of both, and after how many steps compiling would pay back. Nothing here changes what
`finetune run` does.

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


def timed_steps(model: Any, optimizer: Any, data: list[dict[str, Any]]) -> list[float]:
    out = []
    for batch in data:
        start = time.perf_counter()
        loss = model(**batch).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        out.append(time.perf_counter() - start)
    return out


def main() -> None:
    import statistics

    import torch
    from transformers import AutoTokenizer

    from finetune.models.names import resolve_name

    args = parse_args()
    torch.set_num_threads(args.threads)
    tokenizer = AutoTokenizer.from_pretrained(resolve_name("bundled:minilm-l6").path)
    data = batches(tokenizer, args.warmup + args.steps)
    results = {}
    for label in ("eager", "compiled"):
        model, optimizer = model_and_optimizer()
        if label == "compiled":
            model = torch.compile(model, dynamic=True)
        times = timed_steps(model, optimizer, data)
        results[label] = (sum(times[: args.warmup]), statistics.median(times[args.warmup :]))
    eager, compiled = results["eager"][1], results["compiled"][1]
    first = results["compiled"][0] - args.warmup * compiled
    print(
        f"torch.compile on the quick-start step: MiniLM + LoRA r8, batch 32, fp32, "
        f"{args.threads} threads, {args.steps} timed steps after {args.warmup}"
    )
    print(f"machine: {platform.machine()}, torch {torch.__version__}")
    print(f"eager step (median): {eager * 1000:.0f} ms")
    print(f"compiled step (median): {compiled * 1000:.0f} ms ({eager / compiled:.2f}x)")
    print(f"compile time (first {args.warmup} steps, less their steady time): {first:.0f} s")
    if compiled < eager:
        print(
            f"pays back after {first / (eager - compiled):.0f} steps "
            f"(the quick start trains {10000 // 32 + 1})"
        )
    else:
        print("never pays back: the compiled step is not faster")


if __name__ == "__main__":
    main()
