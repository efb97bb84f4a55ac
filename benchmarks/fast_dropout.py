"""Hashed dropout masks (finetune/models/fast_dropout.py) against PyTorch's CPU dropout.

    python benchmarks/fast_dropout.py               # mask draws, dropouts, the quick-start step
    python benchmarks/fast_dropout.py --steps 20

Measurements, each the median of interleaved repeats on this CPU:
1. drawing a keep-mask of one MiniLM activation (batch 32 x 26 tokens x 384): `bernoulli_`
   (what `F.dropout` and `torch.native_dropout` call) against `keep_mask`;
2. forward + backward of one dropout on that activation in bf16: `torch.native_dropout` (the
   previous swap, bool mask) against `fast_dropout`;
3. forward + backward of one attention with dropout 0.1 (12 heads x 26 x 32, bf16 autocast):
   transformers' `sdpa` against `finetune_sdpa` (models/fast_attention.py);
4. the quick-start training step (bundled MiniLM, LoRA r8 on query/value, batch 32, 26 tokens,
   bf16 autocast where native, frozen weights stored in bf16), three ways: every `nn.Dropout`
   on `torch.native_dropout` and attention on `sdpa` (PyTorch's draws), hashed `nn.Dropout`
   masks with `sdpa`, and hashed masks for both (what `finetune run` does).

Results: stdout and benchmarks/results/fast_dropout.md. Run on a quiet machine.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import platform
import statistics
import time
import types
from collections.abc import Callable
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results"
SHAPE = (32, 26, 384)


def median_ms(fn: Callable[[], Any], repeats: int, warmup: int = 3) -> float:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append((time.perf_counter() - start) * 1000)
    return statistics.median(times)


def bf16_native() -> bool:
    flags = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else ""
    return "avx512_bf16" in flags or "amx_bf16" in flags


def mask_and_dropout(repeats: int) -> list[str]:
    import torch

    from finetune.models.fast_dropout import fast_dropout, keep_mask

    x = torch.randn(SHAPE)
    bernoulli = median_ms(lambda: torch.empty_like(x).bernoulli_(0.9), repeats)
    hashed = median_ms(lambda: keep_mask(SHAPE, 0.1), repeats)
    xb = torch.randn(SHAPE, dtype=torch.bfloat16, requires_grad=True)
    grad = torch.randn(SHAPE, dtype=torch.bfloat16)
    native = median_ms(lambda: torch.native_dropout(xb, 0.1, True)[0].backward(grad), repeats)
    fast = median_ms(lambda: fast_dropout(xb, 0.1).backward(grad), repeats)
    n = x.numel()
    return [
        f"| keep-mask draw, {n:,} elements | {bernoulli:.3f} ms ({bernoulli / n * 1e6:.2f} ns"
        f"/element) | {hashed:.3f} ms ({hashed / n * 1e6:.2f} ns/element) | "
        f"{bernoulli / hashed:.2f}x |",
        f"| one dropout, forward + backward, bf16 | {native:.3f} ms | {fast:.3f} ms | "
        f"{native / fast:.2f}x |",
        attention_row(repeats),
    ]


def attention_row(repeats: int) -> str:
    import torch
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    from finetune.models.fast_attention import attention_forward

    module = types.SimpleNamespace(training=True, is_causal=False)
    q, k, v = (torch.randn(32, 12, 26, 32, requires_grad=True) for _ in range(3))
    mask = torch.ones(32, 1, 26, 26, dtype=torch.bool)
    mask[::2, :, :, 20:] = False  # half the rows padded, as in a length-grouped batch

    def call(forward: Callable[..., Any]) -> None:
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16_native()):
            out, _ = forward(module, q, k, v, mask, dropout=0.1, scaling=None)
        out.float().sum().backward()

    sdpa = median_ms(lambda: call(sdpa_attention_forward), repeats)
    hashed = median_ms(lambda: call(attention_forward), repeats)
    return (
        f"| one attention with dropout 0.1, forward + backward (sdpa / finetune_sdpa) | "
        f"{sdpa:.3f} ms | {hashed:.3f} ms | {sdpa / hashed:.2f}x |"
    )


VARIANTS = ("torch", "masks", "masks+attention")


def quickstart_model(variant: str) -> tuple[Any, Any, int]:
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForSequenceClassification

    from finetune.models.frozen_dtype import store_frozen_in
    from finetune.models.lean_backward import lean_backward
    from finetune.models.names import resolve_name

    torch.manual_seed(0)
    path = resolve_name("bundled:minilm-l6").path
    base = AutoModelForSequenceClassification.from_pretrained(path, num_labels=2)
    config = LoraConfig(r=8, lora_alpha=16, lora_dropout=0.0, target_modules=["query", "value"])
    model = get_peft_model(base, config)
    if bf16_native():
        store_frozen_in(model, torch.bfloat16)
    swapped = lean_backward(model)["dropout"]
    if variant != "masks+attention":  # transformers' sdpa draws its own attention dropout
        model.get_base_model().set_attn_implementation("sdpa")
    if variant == "torch":  # the bool-mask swap on torch.native_dropout (PyTorch's draws)
        for module in model.modules():
            if type(module) is torch.nn.Dropout and module.p > 0:
                module.forward = types.MethodType(  # type: ignore[method-assign]
                    lambda self, x: torch.native_dropout(x, self.p, self.training)[0], module
                )
    model.train()
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-3)
    return model, optimizer, swapped


def step_times(steps: int, rounds: int) -> list[str]:
    import torch

    dtype = torch.bfloat16 if bf16_native() else torch.float32
    ids = torch.randint(1000, 20000, (32, 26))
    batch = {"input_ids": ids, "attention_mask": torch.ones_like(ids)}
    labels = torch.randint(0, 2, (32,))
    built = {variant: quickstart_model(variant) for variant in VARIANTS}

    def one(variant: str) -> None:
        model, optimizer, _ = built[variant]
        with torch.autocast("cpu", dtype=dtype, enabled=dtype is torch.bfloat16):
            loss = model(**batch, labels=labels).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    medians: dict[str, list[float]] = {variant: [] for variant in VARIANTS}
    for _ in range(rounds):
        for variant in VARIANTS:
            medians[variant].append(median_ms(lambda v=variant: one(v), steps))
    ms = {variant: statistics.median(times) for variant, times in medians.items()}
    swapped, kind = built["masks"][2], str(dtype).split(".")[-1]
    step = f"quick-start training step ({swapped} nn.Dropout, {kind})"
    pairs = [("torch", "masks", "hashed nn.Dropout masks"),
             ("masks", "masks+attention", "then hashed attention dropout"),
             ("torch", "masks+attention", "both")]  # fmt: skip
    return [
        f"| {step}: {what} | {ms[a]:.1f} ms | {ms[b]:.1f} ms | {ms[a] / ms[b]:.2f}x |"
        for a, b, what in pairs
    ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=15, help="timed steps per round")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds")
    parser.add_argument("--repeats", type=int, default=200, help="timed repeats (1 and 2)")
    parser.add_argument("--out", type=Path, default=RESULTS / "fast_dropout.md")
    args = parser.parse_args(argv)

    import torch

    torch.set_num_threads(os.cpu_count() or 1)
    rows = mask_and_dropout(args.repeats)
    step_rows = step_times(args.steps, args.rounds)
    stamp = dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    lines = [
        f"# Hashed dropout masks vs PyTorch's CPU dropout ({stamp})",
        "",
        f"Machine: {platform.machine()}, {os.cpu_count()} cores, AVX512-BF16/AMX: "
        f"{'yes' if bf16_native() else 'no'}; torch {torch.__version__}; load average "
        f"{os.getloadavg()[0]:.1f}. Medians of interleaved repeats.",
        "",
        "| what | PyTorch's draws (bernoulli_ / native_dropout / sdpa) | hashed | speed-up |",
        "|---|---|---|---|",
        *rows,
        *step_rows,
        "",
    ]
    text = "\n".join(lines)
    print(text)
    args.out.write_text(text, encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
