"""Frozen weights stored in the autocast dtype (finetune/models/frozen_dtype.py), measured alone.

Two measurements under bf16 autocast, each side by side in one process, interleaved, medians:

1. the quick-start training step: bundled MiniLM + LoRA r8 on query/value, batch 32 x 28 tokens,
   AdamW: fp32 weights (autocast casts the frozen ones at every call) vs frozen Linear weights
   stored in bf16 (what `finetune run` does under bf16 since this change); same losses checked;
2. greedy generation on the bundled SmolLM2-135M (batch 8, a 120-token prompt, 24 new tokens),
   as `eval` / `predict` run it: fp32 weights vs every linear weight stored in bf16 (its tied
   LM head gets its own bf16 copy, the embedding stays fp32); same tokens checked.

    python benchmarks/frozen_dtype.py              # both
    python benchmarks/frozen_dtype.py --repeats 5 --skip-generation

Needs a CPU with native bf16 (AVX512-BF16/AMX) or a GPU to mean anything; the numbers are the
same either way by construction. Results: stdout and benchmarks/results/frozen_dtype.md.
"""

from __future__ import annotations

import argparse
import copy
import datetime as dt
import os
import platform
import statistics
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results"


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=15, help="timed steps per side")
    parser.add_argument("--gen-repeats", type=int, default=3)
    parser.add_argument("--skip-generation", action="store_true")
    parser.add_argument("--out", type=Path, default=RESULTS / "frozen_dtype.md")
    return parser.parse_args()


def train_steps(repeats: int) -> tuple[float, float, bool, int]:
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForSequenceClassification

    from finetune.models.frozen_dtype import store_frozen_in
    from finetune.models.names import resolve_name

    path = resolve_name("bundled:minilm-l6").path

    def build(stored: bool):
        torch.manual_seed(0)
        model = AutoModelForSequenceClassification.from_pretrained(path, num_labels=2)
        config = LoraConfig(r=8, lora_alpha=16, target_modules=["query", "value"])
        model = get_peft_model(model, config)
        for param in model.base_model.model.classifier.parameters():
            param.requires_grad_(True)
        converted = store_frozen_in(model, torch.bfloat16) if stored else 0
        params = [p for p in model.parameters() if p.requires_grad]
        return model, torch.optim.AdamW(params, lr=1e-3), converted

    torch.manual_seed(1)
    ids = torch.randint(1000, 20000, (32, 28))
    batch = {"input_ids": ids, "attention_mask": torch.ones_like(ids)}
    batch["labels"] = torch.randint(0, 2, (32,))
    sides = {False: build(False), True: build(True)}
    losses: dict[bool, list[float]] = {False: [], True: []}
    times: dict[bool, list[float]] = {False: [], True: []}

    def step(stored: bool) -> float:
        model, optimizer, _ = sides[stored]
        started = time.perf_counter()
        with torch.autocast("cpu", dtype=torch.bfloat16):
            loss = model(**batch).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        losses[stored].append(loss.item())
        return time.perf_counter() - started

    for stored in (False, True):
        step(stored)
        step(stored)
    for _ in range(repeats):
        for stored in (False, True):
            times[stored].append(step(stored))
    same = losses[False] == losses[True]
    return statistics.median(times[False]), statistics.median(times[True]), same, sides[True][2]


def generation(repeats: int) -> tuple[float, float, bool, int]:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from finetune.models.frozen_dtype import store_frozen_in
    from finetune.models.names import resolve_name

    path = resolve_name("bundled:smollm2-135m").path
    tokenizer = AutoTokenizer.from_pretrained(path)
    tokenizer.padding_side = "left"
    model = AutoModelForCausalLM.from_pretrained(path).eval().requires_grad_(False)
    stored = copy.deepcopy(model)
    converted = store_frozen_in(stored, torch.bfloat16, inference=True)
    text = "Summarize: " + "the quick brown fox jumps over the lazy dog " * 12
    encoded = tokenizer([text] * 8, return_tensors="pt")

    def run(m):
        with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16):
            started = time.perf_counter()
            out = m.generate(
                **encoded, max_new_tokens=24, do_sample=False, pad_token_id=tokenizer.eos_token_id
            )
            return time.perf_counter() - started, out

    run(model)
    run(stored)
    plain_times, stored_times, same = [], [], True
    for _ in range(repeats):
        seconds, tokens = run(model)
        plain_times.append(seconds)
        seconds, stored_tokens = run(stored)
        stored_times.append(seconds)
        same = same and bool(torch.equal(tokens, stored_tokens))
    return statistics.median(plain_times), statistics.median(stored_times), same, converted


def machine() -> str:
    import torch

    from finetune.train.precision import cpu_native_bf16

    native = "yes" if cpu_native_bf16() else "no"
    return (
        f"{platform.machine()}, {os.cpu_count()} cores, AVX512-BF16/AMX: {native}, torch "
        f"{torch.__version__}, {torch.get_num_threads()} threads, load {os.getloadavg()[0]:.1f}"
    )


def main() -> int:
    args = parse_args()
    when = dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    lines = [
        f"# Frozen weights stored in bf16 under autocast ({when})",
        "",
        f"Machine: {machine()}.",
        "",
    ]
    lines += [
        "| what | fp32 weights, autocast casts | frozen stored in bf16 | speed-up | same numbers |"
    ]
    lines += ["|---|---|---|---|---|"]
    plain, stored, same, converted = train_steps(args.repeats)
    lines.append(
        f"| quick-start train step (median of {args.repeats}; {converted} linear layers stored) | "
        f"{plain * 1000:.0f} ms | {stored * 1000:.0f} ms | **{plain / stored:.2f}x** | "
        f"losses {'identical' if same else 'DIFFER'} |"
    )
    print(lines[-1], flush=True)
    if not args.skip_generation:
        plain, stored, same, converted = generation(args.gen_repeats)
        lines.append(
            f"| SmolLM2-135M greedy generation, batch 8, 24 new tokens (median of "
            f"{args.gen_repeats}; {converted} linear layers stored, the tied LM head as its own "
            "copy) | "
            f"{plain:.2f} s | {stored:.2f} s | **{plain / stored:.2f}x** | "
            f"tokens {'identical' if same else 'DIFFER'} |"
        )
        print(lines[-1], flush=True)
    lines.append(f"\nLoad average at the end: {os.getloadavg()[0]:.1f}.")
    text = "\n".join(lines) + "\n"
    print(text)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text, encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
