"""CLI start-up: `finetune --help` and `finetune validate` against a bare `python -c pass`.

Best of --repeats wall times of each command in a fresh process (start-up is what a user waits
for on every command), and whether `validate` imported torch. Issue #12's goal: `--help` within
0.3 s of `python -c pass`; `validate recipes/` without importing torch.

    python benchmarks/cli_startup.py
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results"
FINETUNE = [sys.executable, "-m", "finetune"]


def best_of(cmd: list[str], repeats: int) -> float:
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        subprocess.run(cmd, cwd=REPO, capture_output=True, check=False)
        best = min(best, time.perf_counter() - start)
    return best


def torch_imported_by_validate() -> bool:
    probe = (
        "import sys; from finetune.cli import app\n"
        "try:\n    app(['validate', 'recipes/'])\nexcept SystemExit:\n    pass\n"
        "print('torch' in sys.modules)"
    )
    done = subprocess.run(
        [sys.executable, "-c", probe], cwd=REPO, capture_output=True, text=True, check=False
    )
    return done.stdout.strip().splitlines()[-1] == "True"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--out", type=Path, default=RESULTS / "cli_startup.md")
    args = parser.parse_args()
    bare = best_of([sys.executable, "-c", "pass"], args.repeats)
    rows = {
        "`python -c pass`": bare,
        "`finetune --help`": best_of([*FINETUNE, "--help"], args.repeats),
        "`finetune validate recipes/`": best_of([*FINETUNE, "validate", "recipes/"], args.repeats),
    }
    when = dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    lines = [
        f"# CLI start-up ({when})",
        "",
        f"Machine: {platform.machine()}, {os.cpu_count()} cores, load average "
        f"{os.getloadavg()[0]:.1f}; best of {args.repeats} fresh processes.",
        "",
        "| command | best wall s | above `python -c pass` |",
        "|---|---|---|",
    ]
    for name, seconds in rows.items():
        lines.append(f"| {name} | {seconds:.3f} | {seconds - bare:+.3f} |")
    lines += ["", f"`validate recipes/` imported torch: {torch_imported_by_validate()}"]
    report = "\n".join(lines) + "\n"
    print(report)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(report)


if __name__ == "__main__":
    main()
