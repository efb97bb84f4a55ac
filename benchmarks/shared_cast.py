"""One cast for the layers that read the same input (finetune/models/shared_cast.py), alone.

The model exactly as `finetune run` builds it for training under bf16 (hashed dropout, frozen
weights in bf16, ...), forward + backward on fixed batches, with the blocks' shared-cast hooks
on and off, interleaved in one process, medians:

1. the quick start: bundled MiniLM, LoRA r32 on query/value (dropout 0), batch 32 at four
   lengths (19, 28, 37, 55 tokens): the six self-attention blocks share their cast;
2. decoder classification as `decoder_throughput.py` runs it: bundled SmolLM2-135M, LoRA r8 on
   q/v with dropout 0.05 (so only the 30 gated MLPs share; attention's LoRA casts for its
   dropout), batch 16 x 48 tokens; and the same with LoRA dropout 0 (attention shares too).

Also checked: the same loss with and without (the forward is the same), and how far the
gradients move (bf16 accumulation).

    python benchmarks/shared_cast.py                # all three
    python benchmarks/shared_cast.py --repeats 5 --skip-decoder

Needs a CPU with native bf16 (AVX512-BF16/AMX) or a GPU to mean anything. Results: stdout and
benchmarks/results/shared_cast.md. Run on a quiet machine.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import platform
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results"
SST2 = REPO / "recipes" / "data" / "sst2" / "train.tsv"


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=10, help="timed passes per side")
    parser.add_argument("--skip-decoder", action="store_true")
    parser.add_argument("--out", type=Path, default=RESULTS / "shared_cast.md")
    return parser.parse_args()


def build(model: str, method: dict[str, Any], tmp: Path, precision: str = "bf16") -> Any:
    """The training model `finetune run` would build for this recipe."""
    import yaml

    from finetune.commands.run import load_checked
    from finetune.setup.accelerator import setup_accelerator
    from finetune.setup.run_setup import RunSetup

    recipe = {
        "model": {"name": model},
        "task": {"type": "classification", "text": "text", "label": "label"},
        "data": {"train": str(SST2), "max_train_samples": 64},
        "method": {"name": "lora", **method},
        "train": {"precision": precision, "batch_size": 16, "max_length": 64},
        "output": {"dir": str(tmp / "out")},
    }
    path = tmp / f"{len(list(tmp.iterdir()))}.yaml"
    path.write_text(yaml.safe_dump(recipe))
    checked = load_checked(path, [])
    setup = RunSetup.for_training(checked, path.parent, setup_accelerator(checked))
    return setup.model, setup.accelerator


class Hooks:
    """The shared-cast pre-hooks of a model's blocks, taken out and put back."""

    def __init__(self, model: Any) -> None:
        from finetune.models.shared_cast import HOOKED

        self.blocks = [m for m in model.modules() if hasattr(m, HOOKED)]
        self.saved = {
            block: {
                key: hook
                for key, hook in block._forward_pre_hooks.items()
                if getattr(getattr(hook, "func", None), "__name__", "") == "_cast_input"
            }
            for block in self.blocks
        }

    def set(self, on: bool) -> None:
        for block, hooks in self.saved.items():
            for key, hook in hooks.items():
                if on:
                    block._forward_pre_hooks[key] = hook
                else:
                    block._forward_pre_hooks.pop(key, None)


def gradients(model: Any, accelerator: Any, batches: list[dict]) -> dict[str, Any]:
    """The summed gradients over the batches (dropout masks seeded as in `passes`)."""
    import torch

    model.train()
    torch.manual_seed(0)
    for batch in batches:
        with accelerator.autocast():
            model(**batch).loss.backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    model.zero_grad(set_to_none=True)
    return grads


def relative(grads: dict[str, Any], reference: dict[str, Any]) -> float:
    """The largest relative change of one parameter's gradient against `reference`."""
    return max(
        float((grads[k].float() - g.float()).norm() / g.float().norm().clamp_min(1e-30))
        for k, g in reference.items()
    )


def passes(
    model: Any, accelerator: Any, batches: list[dict], repeats: int, fp32: dict[str, Any]
) -> dict[str, Any]:
    """Median forward + backward time over all batches, hooks off and on, interleaved."""
    import torch

    hooks = Hooks(model)
    model.train()

    def run(on: bool) -> tuple[float, float, dict[str, torch.Tensor]]:
        hooks.set(on)
        torch.manual_seed(0)  # the same dropout masks on both sides
        started = time.perf_counter()
        losses = []
        for batch in batches:
            with accelerator.autocast():
                loss = model(**batch).loss
            loss.backward()
            losses.append(loss.item())
        seconds = time.perf_counter() - started
        grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
        model.zero_grad(set_to_none=True)
        return seconds, sum(losses), grads

    run(False), run(True)  # warm
    off_s, on_s = [], []
    for _ in range(repeats):
        off_s.append(run(False)[0])
        on_s.append(run(True)[0])
    _, off_loss, off_grads = run(False)
    _, on_loss, on_grads = run(True)
    off, on = statistics.median(off_s), statistics.median(on_s)
    return {
        "blocks": len(hooks.blocks),
        "off_ms": off * 1000,
        "on_ms": on * 1000,
        "speedup": off / on,
        "same_loss": off_loss == on_loss,
        "moved": relative(on_grads, off_grads),
        "off_vs_fp32": relative(off_grads, fp32),
        "on_vs_fp32": relative(on_grads, fp32),
    }


def batches(vocab: int, size: int, lengths: tuple[int, ...]) -> list[dict]:
    import torch

    generator = torch.Generator().manual_seed(0)
    return [
        {
            "input_ids": torch.randint(1000, vocab - 1, (size, t), generator=generator),
            "attention_mask": torch.ones(size, t, dtype=torch.long),
            "labels": torch.randint(0, 2, (size,), generator=generator),
        }
        for t in lengths
    ]


def main() -> None:
    args = parse_args()
    rows = []
    with tempfile.TemporaryDirectory(prefix="finetune-shared-cast-") as name:
        tmp = Path(name)
        setups = [
            (
                "quick start: MiniLM, LoRA r32 q/v, dropout 0, batch 32 x (19, 28, 37, 55)",
                "bundled:minilm-l6",
                {"r": 32, "alpha": 64, "dropout": 0.0},
                (32, (19, 28, 37, 55)),
            )
        ]
        if not args.skip_decoder:
            setups += [
                (
                    f"SmolLM2-135M classification, LoRA r8 q/v, dropout {p}, batch 16 x 48",
                    "bundled:smollm2-135m",
                    {"r": 8, "alpha": 16, "dropout": p},
                    (16, (48,)),
                )
                for p in (0.05, 0.0)
            ]
        for title, model_name, method, (size, lengths) in setups:
            reference, accelerator = build(model_name, method, tmp, "fp32")
            vocab = reference.get_input_embeddings().num_embeddings
            data = batches(vocab, size, lengths)
            fp32 = gradients(reference, accelerator, data)
            del reference
            model, accelerator = build(model_name, method, tmp)
            row = passes(model, accelerator, data, args.repeats, fp32)
            row["setup"] = title
            print(row, flush=True)
            rows.append(row)
            del model
    report = render(rows, args.repeats)
    print(report)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(report)


def render(rows: list[dict[str, Any]], repeats: int) -> str:
    import torch

    cpuinfo = Path("/proc/cpuinfo")
    flags = cpuinfo.read_text() if cpuinfo.is_file() else ""
    native = "avx512_bf16" in flags or "amx_bf16" in flags
    lines = [
        "# One cast for the layers that read the same input "
        f"({dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M} UTC)",
        "",
        f"Machine: {platform.machine()}, {os.cpu_count()} cores, AVX512-BF16/AMX: "
        f"{'yes' if native else 'no (bf16 emulated)'}; torch {torch.__version__}; load average "
        f"{os.getloadavg()[0]:.1f}. bf16 autocast, the training model as `finetune run` builds "
        f"it; forward + backward over the batches, median of {repeats} interleaved passes a side.",
        "",
        "Gradients: the largest relative change of one parameter's gradient, on against off, "
        "and each against the same model trained in fp32 (no autocast): the bf16 error the "
        "shared cast adds, beside the one autocast already has.",
        "",
        "| setup | blocks sharing | off ms | on ms | speed-up | same loss | gradient on vs off "
        "| off vs fp32 | on vs fp32 |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['setup']} | {r['blocks']} | {r['off_ms']:.0f} | {r['on_ms']:.0f} | "
            f"{r['speedup']:.3f}x | {'yes' if r['same_loss'] else 'NO'} | {r['moved']:.2e} | "
            f"{r['off_vs_fp32']:.2e} | {r['on_vs_fp32']:.2e} |"
        )
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
