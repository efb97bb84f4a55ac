"""Where a training step's time goes: `torch.profiler` over the quick-start LoRA training.

Runs `finetune run` on the quick-start recipe (bundled MiniLM, LoRA r8, batch 32, max_length 64)
for --steps optimizer steps without evaluation, under the profiler, and reports self CPU time
by kind of operator: matrix products (the part bounded by the GEMM ceiling), the rest of the
model (norms, softmax, GELU, dropout, embedding, copies), the optimizer, and everything else
(collate, loader, the loop). It answers "how close to the hardware limit is the loop, and what
would a faster loop have to remove".

    python benchmarks/profile_step.py               # 60 steps
    python benchmarks/profile_step.py --steps 20
    python benchmarks/profile_step.py --precision fp32 --out /tmp/fp32.md

Results: stdout and benchmarks/results/profile_step.md. Run on a quiet machine.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import platform
import tempfile
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results"

MATMUL = ("aten::mm", "aten::addmm", "aten::bmm", "aten::baddbmm", "aten::_addmm_activation")
OPTIMIZER = ("aten::_foreach", "Optimizer.step", "aten::_fused_adam")
MODEL_OPS = (
    "aten::native_layer_norm",
    "aten::native_layer_norm_backward",
    "aten::_softmax",
    "aten::_softmax_backward_data",
    "aten::gelu",
    "aten::gelu_backward",
    "aten::native_dropout",
    "aten::add",
    "aten::mul",
    "aten::div",
    "aten::embedding",
    "aten::copy_",
    "aten::clone",
    "aten::_scaled_dot_product",
    "aten::scaled_dot_product",
    "aten::cat",
    "aten::sum",
    "aten::where",
    "aten::masked_fill",
    "aten::tanh",
    "aten::cross_entropy",
    "aten::_log_softmax",
    "aten::nll_loss",
)


def kind(name: str) -> str:
    if name in MATMUL:
        return "matrix products"
    if name.startswith(OPTIMIZER):
        return "optimizer"
    if name.startswith(MODEL_OPS) or name.startswith("aten::"):
        return "other model operators"
    return "other"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument(
        "--precision",
        choices=("auto", "fp32", "bf16"),
        default=None,
        help="train.precision (default: the recipe's auto); fp32 profiles what an fp32-only "
        "CPU computes on one with native bf16",
    )
    parser.add_argument("--out", type=Path, default=RESULTS / "profile_step.md")
    args = parser.parse_args()
    import torch
    from torch.profiler import ProfilerActivity, profile

    from finetune.commands.run import run

    recipe = yaml.safe_load((REPO / "recipes" / "quickstart.yaml").read_text())
    recipe["data"] = {"train": str(REPO / recipe["data"]["train"])}
    recipe["train"]["max_steps"] = args.steps
    if args.precision:
        recipe["train"]["precision"] = args.precision
    with tempfile.TemporaryDirectory(prefix="finetune-profile-") as tmp:
        recipe["output"] = {"dir": str(Path(tmp) / "run")}
        path = Path(tmp) / "recipe.yaml"
        path.write_text(yaml.safe_dump(recipe))
        run(path, progress=False)  # warm: caches the tokenised split, loads the libraries
        recipe["output"] = {"dir": str(Path(tmp) / "profiled")}
        path.write_text(yaml.safe_dump(recipe))
        started = time.perf_counter()
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            summary = run(path, progress=False)
        wall = time.perf_counter() - started
    setup = f"LoRA r{recipe['method']['r']} query/value, precision {recipe['train']['precision']}"
    events = prof.key_averages()
    report = render(events, summary.metrics, wall, args.steps, torch.__version__, setup)
    print(report)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(report)


def render(
    events: Any, metrics: dict[str, Any], wall: float, steps: int, torch_v: str, setup: str
) -> str:
    totals: dict[str, float] = defaultdict(float)
    ops = []
    for event in events:
        self_ms = event.self_cpu_time_total / 1e3
        totals[kind(event.key)] += self_ms
        ops.append((self_ms, event.key, event.count))
    all_ms = sum(totals.values())
    when = dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    lines = [
        f"# Where a training step's time goes ({when})",
        "",
        f"Machine: {platform.machine()}, {os.cpu_count()} cores, torch {torch_v}; load average "
        f"{os.getloadavg()[0]:.1f}. Quick-start recipe (MiniLM, {setup}, batch 32, max_length "
        f"64), {steps} steps without evaluation, under torch.profiler "
        f"(which slows small operators): run wall {wall:.1f} s, train "
        f"{metrics.get('train_samples_per_s', 0):.1f} samples/s.",
        "",
        "| kind | self CPU ms | share |",
        "|---|---|---|",
    ]
    for name, ms in sorted(totals.items(), key=lambda kv: -kv[1]):
        lines.append(f"| {name} | {ms:,.0f} | {ms / all_ms:.1%} |")
    lines += ["", "Top operators by self CPU time:", "", "| operator | calls | self CPU ms |"]
    lines.append("|---|---|---|")
    for ms, name, count in sorted(ops, reverse=True)[:15]:
        lines.append(f"| `{name}` | {count} | {ms:,.0f} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
