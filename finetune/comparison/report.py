"""The one report writer of `compare` and `sweep`: report.md/.csv/.json and report.png.

How to read it is in the README's compare section. The header says whether learning rates
were tuned (and which were used when not); every quality figure carries its 95% bootstrap
interval; rows within noise of the best are marked as such instead of ranked; a warning says
when the machine was busy enough to stretch the times.
"""

from __future__ import annotations

import csv
import io
from dataclasses import asdict
from pathlib import Path

from finetune.comparison.runner import Row, SearchEntry, higher_is_better
from finetune.comparison.tune import best_rate, safe_rate, standard_error
from finetune.run.files import atomic_write_json, atomic_write_text


def human_size(n: float | None) -> str:
    if n is None:
        return "–"
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return "–"


def _num(value: float, scale: float | None = None) -> str:
    """Accuracy is a fraction (4 decimals); ROUGE/BLEU are x100 (2 decimals). `scale`: the
    figure a std or bound belongs to, whose decimals it keeps (ROUGE's bound 0.0 is 0.00)."""
    return f"{value:.4f}" if abs(value if scale is None else scale) <= 1 else f"{value:.2f}"


def quality_cell(row: Row) -> str:
    """The figure, ± the seeds' std, [its 95% interval]; a run without eval data says so."""
    if row.quality is None:
        return "no eval data"
    q = row.quality
    text = f"{row.quality_metric} {_num(q)}"
    if row.quality_std is not None:
        text += f" ± {_num(row.quality_std, q)} (std, {len(row.per_seed)} seeds)"
    if row.quality_low is not None and row.quality_high is not None:
        text += f" [{_num(row.quality_low, q)}, {_num(row.quality_high, q)}]"
    return text


def verdict_cell(row: Row) -> str:
    return {"within noise of best": "≈ best (within noise)"}.get(row.verdict, row.verdict)


def _cell(text: str) -> str:
    """One markdown table cell: a '|' or line break in an error message would split the row."""
    return " ".join(text.split()).replace("|", "\\|")


def _rate(lr: float | None) -> str:
    return "–" if lr is None else f"{lr:g}"


def _time_cell(row: Row) -> str:
    if row.train_seconds is None and row.baseline and row.wall_seconds is not None:
        return f"none (wall {row.wall_seconds:.0f} s: load + evaluate)"
    if row.train_seconds is None:
        return "–"
    text = f"{row.train_seconds:.0f} s"
    if row.wall_seconds is not None and row.cpu_seconds is not None:
        text += f" (wall {row.wall_seconds:.0f} s, CPU {row.cpu_seconds:.0f} s)"
    return text


def _load_cell(row: Row) -> str:
    if row.load_before is None or row.load_after is None:
        return "–"
    return f"{row.load_before:.1f} → {row.load_after:.1f} / {row.cores} cores"


def baseline(rows: list[Row]) -> Row | None:
    """The zero-shot row, when it ran and has a quality figure to measure the others from."""
    return next(
        (r for r in rows if r.baseline and r.status == "ok" and r.quality is not None), None
    )


def gain_cell(row: Row, base: Row) -> str:
    """How far this row moved from the zero-shot base model, in the task's metric."""
    if row is base:
        return "base model"
    if row.quality is None or base.quality is None or row.quality_metric != base.quality_metric:
        return "–"
    digits = 4 if abs(base.quality) <= 1 else 2  # as _num: fractions, or ROUGE/BLEU x100
    return f"{row.quality - base.quality:+.{digits}f}"


def table(rows: list[Row], point_keys: list[str] | None = None) -> str:
    keys, base = point_keys or [], baseline(rows)
    rate = "train.lr" not in keys  # a sweep over train.lr has it as an axis column already
    head = ["point"] if keys else ["method"]
    head += keys + (["lr"] if rate else []) + ["quality [95% CI]"]
    head += ["vs zero-shot"] if base else []
    head += ["verdict", "trainable parameters", "peak memory", "train time", "load"]
    head += ["size on disk"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        first = [f"`{r.name or r.method}`"] + [_cell(str(r.point.get(k, ""))) for k in keys]
        if r.status != "ok":
            why = r.status + (f" (log: {r.log})" if r.log else "")
            cells = first + ([_rate(r.lr)] if rate else []) + [_cell(why)]
            cells += [""] * (len(head) - len(cells))
            lines.append("| " + " | ".join(cells) + " |")
            continue
        share = 100 * (r.trainable or 0) / max(r.total or 1, 1)
        cells = first + ([_rate(r.lr) + (" (tuned)" if r.tuned else "")] if rate else [])
        cells += [
            quality_cell(r),
            *([gain_cell(r, base)] if base else []),
            verdict_cell(r),
            f"{r.trainable or 0:,} ({share:.2f}%)",
            human_size(r.peak_memory_bytes),
            _time_cell(r),
            _load_cell(r),
            human_size(r.artifact_bytes),
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def load_warning(rows: list[Row]) -> str:
    busy = [
        r.name or r.method
        for r in rows
        if r.cores and max(r.load_before or 0, r.load_after or 0) > r.cores
    ]
    if not busy:
        return ""
    return (
        f"> **Warning: the machine was busy** during {', '.join(busy)} (load average above "
        "the number of cores): their training and wall times are stretched by other work "
        "and do not compare; rerun on an idle machine to compare speed.\n"
    )


def search_tables(rows: list[Row]) -> str:
    """Per tuned method: each rate tried and its held-out score, the chosen one marked."""
    parts = []
    for r in rows:
        if not r.search:
            continue
        lines = [f"### `{r.method}`: learning-rate search", "", "| lr | held-out score | |"]
        lines.append("|---|---|---|")
        passed = _passed_over(r)
        for s in r.search:
            value = s["score"]
            score = "failed" if value is None else f"{s['metric']} {_num(value)}"
            if s.get("one_answer"):
                score += " (one label for every row: learned nothing)"
            mark = "chosen" if s["lr"] == r.lr else ""
            if passed is not None and s is passed[0]:
                mark = passed[1]
            lines.append(f"| {s['lr']:g} | {score} | {mark} |")
        parts.append("\n".join(lines) + "\n")
    return "\n".join(parts)


def _passed_over(row: Row) -> tuple[SearchEntry, str] | None:
    """The search's best rate and why a smaller one ran instead (tune.py: the cliff rule and
    the one-standard-error rule), when the chosen rate scored worse than some rate above it."""
    rates = [s["lr"] for s in row.search]
    if row.lr not in rates:
        return None
    ran = row.search[rates.index(row.lr)]
    best_lr = best_rate(row.search, row.lr)  # a rate that learned outranks one that did not
    if ran["score"] is None or best_lr <= row.lr:
        return None
    best = row.search[rates.index(best_lr)]
    sign = 1.0 if higher_is_better(ran["metric"]) else -1.0
    error = standard_error(best)
    cliff = safe_rate(row.search, best["lr"]) < best["lr"]
    if (
        not cliff
        and error is not None
        and sign * ran["score"] >= sign * (best["score"] or 0.0) - error
    ):
        return best, "best held out, by less than one standard error: the smaller rate runs"
    return best, "best held out; the rate above it collapsed, so the rate below runs"


def render(title: str, header: list[str], rows: list[Row], keys: list[str] | None = None) -> str:
    noise = (
        "Quality: the task's main metric on the eval split, with its 95% bootstrap interval "
        "over eval examples; rows marked *within noise* are not distinguishable from the best "
        "(paired bootstrap), so do not rank them.\n"
    )
    body = [f"# {title}\n", *(h + "\n" for h in header), noise, load_warning(rows)]
    body += [table(rows, keys), search_tables(rows)]
    return "\n".join(part for part in body if part)


def write_report(
    rows: list[Row], out: Path, title: str, header: list[str], keys: list[str] | None = None
) -> None:
    atomic_write_text(out / "report.md", render(title, header, rows, keys))
    atomic_write_json(out / "report.json", [asdict(r) for r in rows])
    buffer = io.StringIO()
    flat = [{k: v for k, v in asdict(r).items() if k not in ("search", "point")} for r in rows]
    for record, row in zip(flat, rows):
        record.update({f"point.{k}": v for k, v in row.point.items()})
    fields = list(dict.fromkeys(k for record in flat for k in record))
    writer = csv.DictWriter(buffer, fieldnames=fields)
    writer.writeheader()
    writer.writerows(flat)
    atomic_write_text(out / "report.csv", buffer.getvalue())
    plot(rows, out / "report.png", title)


def plot(rows: list[Row], path: Path, title: str) -> None:
    """Quality (with its 95% interval) against trainable parameters (log scale)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    done = [r for r in rows if r.status == "ok" and r.quality is not None and r.trainable]
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for r in done:
        x, y = float(r.trainable or 0), float(r.quality or 0)
        err = None
        if r.quality_low is not None and r.quality_high is not None:
            err = [[max(y - r.quality_low, 0.0)], [max(r.quality_high - y, 0.0)]]
        ax.errorbar([x], [y], yerr=err, fmt="o", markersize=7, capsize=4)
        label = (
            f"{r.name or r.method}\n{r.train_seconds or 0:.0f} s, {human_size(r.artifact_bytes)}"
        )
        ax.annotate(label, (x, y), textcoords="offset points", xytext=(6, 4), fontsize=8)
    base = baseline(rows)
    if base is not None and base.quality is not None:  # 0 trainable: no place on a log axis
        ax.axhline(base.quality, linestyle="--", color="gray", linewidth=1)
        if base.quality_low is not None and base.quality_high is not None:
            ax.axhspan(base.quality_low, base.quality_high, color="gray", alpha=0.12)
        ax.annotate(
            f"{base.name or base.method} (zero-shot, nothing trained)",
            (0.01, base.quality),
            xycoords=("axes fraction", "data"),
            textcoords="offset points",
            xytext=(0, 3),
            fontsize=8,
            color="dimgray",
        )
    ax.set_xscale("log")
    ax.margins(x=0.35, y=0.2)  # room for the labels of the outermost points
    ax.set_xlabel("trainable parameters (log scale)")
    metric = done[0].quality_metric if done else "quality"
    ax.set_ylabel(f"{metric} (bars: 95% bootstrap interval)")
    ax.set_title(f"{title}: quality vs trainable parameters", fontsize=10)
    ax.grid(True, alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
