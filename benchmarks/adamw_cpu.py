"""AdamW's step on a CPU: torch's default (a loop over the tensors), foreach, and fused.

The LoRA r8 q/v tensors of a SmolLM2-135M-shaped model (30 layers: A 8x576, B 576x8 on q,
B 192x8 on v, plus a 2-way score head) and of a MiniLM-shaped one (6 layers of 384), one
optimizer step each, as `train/optim.py` builds it (two groups). finetune uses the fused
kernel wherever the parameters allow it; this is why.

    python benchmarks/adamw_cpu.py

Results: stdout and --out (default benchmarks/results/adamw_cpu.md, appended).
"""

from __future__ import annotations

import argparse
import datetime as dt
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from decoder_sides import machine_line

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results"
SHAPES = {  # name: (layers, hidden, value width)
    "SmolLM2-135M LoRA r8 q/v": (30, 576, 192),
    "MiniLM-L6 LoRA r8 q/v": (6, 384, 384),
}
KINDS = {"default (loop)": {}, "foreach": {"foreach": True}, "fused": {"fused": True}}


def step_ms(layers: int, hidden: int, value: int, options: dict[str, bool], steps: int) -> float:
    import torch

    shapes = [(8, hidden), (hidden, 8), (8, hidden), (value, 8)] * layers
    params = [torch.nn.Parameter(torch.randn(shape)) for shape in [*shapes, (2, hidden)]]
    for param in params:
        param.grad = torch.randn_like(param)
    groups = [{"params": params[:-1]}, {"params": params[-1:], "lr": 3e-3}]
    optimizer = torch.optim.AdamW(groups, lr=1e-4, **options)
    times = []
    for _ in range(steps + 5):
        started = time.perf_counter()
        optimizer.step()
        times.append(time.perf_counter() - started)
    return statistics.median(times[5:]) * 1e3


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--out", type=Path, default=RESULTS / "adamw_cpu.md")
    args = parser.parse_args()
    import torch

    lines = [
        f"## AdamW step on CPU, {dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M} UTC, torch "
        f"{torch.__version__}, {torch.get_num_threads()} threads; median of {args.steps} steps, ms",
        "",
        machine_line(),
        "",
        "| tensors | " + " | ".join(KINDS) + " |",
        "|---|" + "---|" * len(KINDS),
    ]
    for name, (layers, hidden, value) in SHAPES.items():
        ms = [step_ms(layers, hidden, value, options, args.steps) for options in KINDS.values()]
        lines.append(f"| {name} ({4 * layers + 1}) | " + " | ".join(f"{m:.2f}" for m in ms) + " |")
    print("\n".join(lines))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    with args.out.open("a") as handle:
        handle.write("\n".join(lines) + "\n\n")


if __name__ == "__main__":
    main()
