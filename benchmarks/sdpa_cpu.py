"""Attention on a CPU in training: sdpa's fused kernel against the math path, by key length.

PyTorch's `scaled_dot_product_attention` without dropout takes its fused CPU kernel
(`_scaled_dot_product_flash_attention_for_cpu`). On SmolLM2-135M classification in bf16 its
backward was 20% of the step. This times forward + backward of one attention call, SmolLM2's
heads (9 query heads of 64, batch 16) with a causal and padding mask, three ways: sdpa (the
fused kernel), sdpa's own math backend, and finetune's math path
(`finetune.models.fast_attention._math_attention`, what `finetune_sdpa` runs up to
MATH_MAX_KEYS keys in bf16). Its crossover is where MATH_MAX_KEYS comes from.

    python benchmarks/sdpa_cpu.py                      # bf16 and fp32, 48 to 448 keys
    python benchmarks/sdpa_cpu.py --lengths 48,128 --dtypes bf16 --threads 2

Results: stdout and --out (default benchmarks/results/sdpa_cpu.md, appended).
"""

from __future__ import annotations

import argparse
import datetime as dt
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from decoder_sides import machine_line

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results"
BATCH, HEADS, DIM = 16, 9, 64


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lengths", default="48,96,128,192,256,448")
    parser.add_argument("--dtypes", default="bf16,fp32")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's own)")
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--out", type=Path, default=RESULTS / "sdpa_cpu.md")
    return parser.parse_args()


def timed(step: Callable[[], None], repeats: int) -> float:
    """Median milliseconds of `step` after three warm-up calls."""
    for _ in range(3):
        step()
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        step()
        times.append(time.perf_counter() - started)
    return statistics.median(times) * 1e3


def sides(length: int, dtype: object) -> dict[str, Callable[[], None]]:
    """The three ways of computing one attention's forward + backward at `length` keys."""
    import torch
    from torch.nn.attention import SDPBackend, sdpa_kernel

    from finetune.models.fast_attention import _math_attention

    qkv = [torch.randn(BATCH, HEADS, length, DIM, dtype=dtype, requires_grad=True) for _ in "qkv"]
    mask = torch.ones(BATCH, 1, length, length, dtype=torch.bool).tril()
    mask[: BATCH // 2, ..., : length // 4] = False  # half the rows start with padding
    mask |= torch.eye(length, dtype=torch.bool)  # no row without a key

    def fused() -> None:
        torch.nn.functional.scaled_dot_product_attention(*qkv, attn_mask=mask).sum().backward()

    def sdpa_math() -> None:
        with sdpa_kernel(SDPBackend.MATH):
            fused()

    def ours() -> None:
        _math_attention(*qkv, mask, 0.0, None, True)[0].sum().backward()

    return {"sdpa fused": fused, "sdpa math": sdpa_math, "finetune math": ours}


def main() -> None:
    args = parse_args()
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    dtypes = {"bf16": torch.bfloat16, "fp32": torch.float32}
    lines = [
        f"## sdpa on CPU, {dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M} UTC, torch {torch.__version__}",
        "",
        f"{machine_line()}; {torch.get_num_threads()} threads. "
        f"Forward + backward of one attention, batch {BATCH}, {HEADS} heads of {DIM}, causal + "
        f"padding mask; median of {args.repeats} calls, ms.",
        "",
        "| dtype | keys | sdpa fused | sdpa math | finetune math | fused / finetune |",
        "|---|---|---|---|---|---|",
    ]
    print("\n".join(lines), flush=True)
    for name in args.dtypes.split(","):
        for length in map(int, args.lengths.split(",")):
            ms = {k: timed(f, args.repeats) for k, f in sides(length, dtypes[name]).items()}
            row = (
                f"| {name} | {length} | {ms['sdpa fused']:.1f} | {ms['sdpa math']:.1f} | "
                f"{ms['finetune math']:.1f} | {ms['sdpa fused'] / ms['finetune math']:.2f}x |"
            )
            print(row, flush=True)
            lines.append(row)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    with args.out.open("a") as handle:
        handle.write("\n".join(lines) + "\n\n")


if __name__ == "__main__":
    main()
