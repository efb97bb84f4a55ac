"""Decoder training throughput: finetune vs Trainer + peft (`group_by_length`) on SmolLM2-135M.

Two setups (issue #24): LoRA r8 classification on SST-2 (batch 16, max_length 48, the first
2,000 rows, one epoch) and LoRA r8 summarisation on DialogSum (batch 8, max_length 384,
max_target_length 64, the first --sum-rows rows, one epoch), each in fp32 and in bf16 autocast.
Runs are interleaved (ours, Trainer, ours, Trainer, ...) and the best samples/s of each side is
kept, since other jobs share the CPU; peak RSS is the same runs' `ru_maxrss`. The sides are
described in benchmarks/decoder_sides.py.

    python benchmarks/decoder_throughput.py                     # both setups, fp32 and bf16
    python benchmarks/decoder_throughput.py --setups classification --precisions fp32 --repeats 3

Results: stdout and --out (default benchmarks/results/decoder_throughput.md, appended).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from decoder_memory import commit
from decoder_sides import REPO, SETUPS, child_main, in_child, machine_line

RESULTS = REPO / "benchmarks" / "results"


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--setups", default="classification,summarization")
    parser.add_argument("--precisions", default="fp32,bf16")
    parser.add_argument("--sides", default="ours,trainer")
    parser.add_argument("--cls-rows", type=int, default=2000)
    parser.add_argument("--sum-rows", type=int, default=96)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--label", default="")
    parser.add_argument("--out", type=Path, default=RESULTS / "decoder_throughput.md")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    return parser.parse_args()


def measure(args: argparse.Namespace) -> dict[tuple[str, str, str], list[dict[str, Any]]]:
    runs: dict[tuple[str, str, str], list[dict[str, Any]]] = {}
    for setup in args.setups.split(","):
        rows = args.cls_rows if setup == "classification" else args.sum_rows
        steps = rows // SETUPS[setup]["batch_size"]
        for precision in args.precisions.split(","):
            for _ in range(args.repeats):
                for side in args.sides.split(","):
                    row = in_child(__file__, side=side, setup=setup, precision=precision,
                                   rows=rows, steps=steps)  # fmt: skip
                    runs.setdefault((setup, precision, side), []).append(row)
    return runs


def render(args: argparse.Namespace, runs: dict[tuple[str, str, str], list]) -> str:
    when = dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    lines = [
        f"## Decoder throughput{' (' + args.label + ')' if args.label else ''}, {when}, "
        f"code {commit()}",
        "",
        f"Machine: {machine_line()}. Best of {args.repeats} interleaved runs per side; bf16 = "
        "autocast (what `train.precision: auto` picks on this CPU), fp32 = "
        "`train.precision: fp32`. SmolLM2-135M-Instruct, LoRA r8 q/v (dropout 0.05), one epoch.",
        f"classification: SST-2 first {args.cls_rows} rows, batch 16, max_length 48; "
        f"summarization: DialogSum first {args.sum_rows} rows, batch 8, max_length 384, "
        "max_target_length 64.",
        "",
        "| setup | precision | side | samples/s (best) | all runs | peak RSS MB (max) "
        "| first/last loss |",
        "|---|---|---|---|---|---|---|",
    ]
    for (setup, precision, side), rows in runs.items():
        best = max(rows, key=lambda r: r["samples_per_s"])
        losses = best.get("losses") or [float("nan")]
        lines.append(
            f"| {setup} | {precision} | {side} | {best['samples_per_s']:.2f} | "
            f"{', '.join(format(r['samples_per_s'], '.2f') for r in rows)} | "
            f"{max(r['peak_rss_mb'] for r in rows):.0f} | {losses[0]:.4f} / {losses[-1]:.4f} |"
        )
    lines.append("")
    for (setup, precision, side), rows in runs.items():
        theirs = runs.get((setup, precision, "trainer"))
        if side != "ours" or not theirs:
            continue
        ours_best = max(r["samples_per_s"] for r in rows)
        their_best = max(r["samples_per_s"] for r in theirs)
        memory = max(r["peak_rss_mb"] for r in rows) / max(r["peak_rss_mb"] for r in theirs)
        lines.append(f"- {setup} {precision}: ours / Trainer {ours_best / their_best:.2f}x "
                     f"samples/s, {memory:.2f}x peak RSS")  # fmt: skip
    return "\n".join(lines) + "\n"


def main() -> None:
    args = parse_args()
    if args.child:
        child_main(json.loads(args.child))
        return
    report = render(args, measure(args))
    print(report)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    with args.out.open("a", encoding="utf-8") as handle:
        handle.write(report + "\n")


if __name__ == "__main__":
    main()
