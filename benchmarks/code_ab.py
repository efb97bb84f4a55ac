"""Two versions of the code on the real loop: interleaved quick-start runs, samples/s of each.

    python benchmarks/code_ab.py bca800b 4637509                  # 4 rounds of 120 steps
    python benchmarks/code_ab.py HEAD~1 HEAD --rounds 6 --steps 200 --out results.md

A change to the training step is judged on `finetune run` itself, not on a bare step: the loop,
loader and logging are what a user waits for. Each revision is checked out once into a
detached git worktree (under --work), and each round runs the quick-start recipe for --steps
steps with the first revision, then the second (`python -m finetune run`, PYTHONPATH at that
worktree), so a drift of the host's speed stretches both alike. Reports each run's train
samples/s, the per-round ratio second / first, its median, and the last logged loss of each
(equal only when the change computes the same numbers and draws the same dropout masks).
Never a test: timings depend on the machine and its load; run it on a quiet one.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import yaml
from quickstart_seeds import machine_line

REPO = Path(__file__).resolve().parents[1]


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("before", help="git revision measured first in each round")
    parser.add_argument("after", help="git revision measured second in each round")
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--steps", type=int, default=120, help="train.max_steps of each run")
    parser.add_argument("--work", type=Path, default=None, help="worktrees and runs (a tmp dir)")
    parser.add_argument("--out", type=Path, default=None, help="also write the report here")
    return parser.parse_args()


def worktree(rev: str, work: Path) -> Path:
    """A detached checkout of `rev` under `work` (`tree-<sha>`); one left by an interrupted
    invocation is used as it is."""
    sha = subprocess.run(
        ["git", "rev-parse", "--short", rev], cwd=REPO, check=True, capture_output=True, text=True
    ).stdout.strip()
    tree = work / f"tree-{sha}"
    if not tree.exists():
        subprocess.run(
            ["git", "worktree", "add", "--detach", "-q", str(tree), sha], cwd=REPO, check=True
        )
    return tree


def one_run(tree: Path, steps: int, out: Path) -> tuple[float, float | None]:
    """Train samples/s and the last logged loss of one quick-start run of `tree`'s code."""
    recipe = yaml.safe_load((tree / "recipes" / "quickstart.yaml").read_text())
    recipe["data"] = {"train": str(tree / recipe["data"]["train"])}  # no eval: training alone
    recipe["train"]["max_steps"] = steps
    recipe["output"] = {"dir": str(out)}
    path = out.with_suffix(".yaml")
    path.write_text(yaml.safe_dump(recipe))
    env = {**os.environ, "PYTHONPATH": str(tree)}
    cmd = [sys.executable, "-m", "finetune", "run", str(path)]
    subprocess.run(cmd, check=True, capture_output=True, env=env, cwd=tree)
    rows = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines() if line]
    speeds = [row["samples_per_s"] for row in rows if "samples_per_s" in row]
    losses = [row["loss"] for row in rows if "loss" in row]
    return speeds[-1], (losses[-1] if losses else None)


def main() -> None:
    args = parse_args()
    work = args.work or Path(tempfile.mkdtemp(prefix="code_ab_"))
    work.mkdir(parents=True, exist_ok=True)
    trees = {"before": worktree(args.before, work), "after": worktree(args.after, work)}
    speeds: dict[str, list[float]] = {name: [] for name in trees}
    last_loss: dict[str, float | None] = {}
    try:
        for rnd in range(args.rounds):
            for name, tree in trees.items():
                speed, last_loss[name] = one_run(tree, args.steps, work / f"{name}{rnd}")
                speeds[name].append(speed)
                print(f"round {rnd + 1} {name}: {speed:.2f} samples/s", flush=True)
    finally:  # the checkouts go; the runs stay under `work`
        for tree in trees.values():
            subprocess.run(["git", "worktree", "remove", "--force", str(tree)], cwd=REPO)
    ratios = [a / b for a, b in zip(speeds["after"], speeds["before"], strict=True)]
    lines = [
        f"# {args.before} vs {args.after}: {args.rounds} interleaved rounds of "
        f"{args.steps} quick-start steps ({dt.datetime.now(dt.timezone.utc):%Y-%m-%d %H:%M} UTC)",
        "",
        f"Machine: {machine_line()}; load average at the end: {os.getloadavg()[0]:.1f}. "
        f"Code: before = {trees['before'].name.removeprefix('tree-')}, "
        f"after = {trees['after'].name.removeprefix('tree-')}.",
        "",
        "| round | before samples/s | after samples/s | after / before |",
        "|---|---|---|---|",
        *(
            f"| {i + 1} | {b:.2f} | {a:.2f} | {r:.3f}x |"
            for i, (b, a, r) in enumerate(zip(speeds["before"], speeds["after"], ratios))
        ),
        "",
        f"Median after / before: **{statistics.median(ratios):.3f}x**. Last logged loss: "
        f"before {last_loss['before']}, after {last_loss['after']}.",
    ]
    report = "\n".join(lines) + "\n"
    print(report)
    if args.out:
        args.out.write_text(report)


if __name__ == "__main__":
    main()
