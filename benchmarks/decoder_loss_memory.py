"""Peak memory of one decoder training step: full logits vs logits only where labels are.

A causal-LM step computes vocab x sequence logits (and their gradient) by default; finetune's
generation tasks pass `logits_to_keep` from the first labelled position on and the labels cut to
the same window (finetune/tasks/generation.py, `keep_from_first_label`), so the prompt's logits
are never materialised. This script runs one forward+backward of a mid-size random Llama config
(hidden 512, 4 layers, vocab 32k; batch 8 x 512 tokens: a 448-token prompt and a 64-token target)
both ways, each in a fresh process, and reports the peak memory the step added (CPU: peak RSS
from getrusage; CUDA: torch.cuda.max_memory_allocated) and that both losses are equal.

    python benchmarks/decoder_loss_memory.py [--device cpu|cuda] [--out benchmarks/results/...]
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
from pathlib import Path

CONFIG = {
    "vocab_size": 32000,
    "hidden_size": 512,
    "intermediate_size": 1376,
    "num_hidden_layers": 4,
    "num_attention_heads": 8,
    "num_key_value_heads": 8,
    "max_position_embeddings": 1024,
}
BATCH, PROMPT, TARGET = 8, 448, 64


def one_step(keep_logits: bool, device: str) -> dict[str, float]:
    """One forward+backward in this process; the memory it added and the loss."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    from finetune.tasks.padding import IGNORE, keep_from_first_label

    torch.manual_seed(0)
    model = LlamaForCausalLM(LlamaConfig(**CONFIG)).to(device)
    ids = torch.randint(0, CONFIG["vocab_size"], (BATCH, PROMPT + TARGET), device=device)
    labels = ids.clone()
    labels[:, :PROMPT] = IGNORE  # the prompt is masked, as finetune's causal encoding does
    inputs = {"input_ids": ids, "labels": labels}
    if keep_logits:
        keep = keep_from_first_label(labels)
        inputs.update(labels=labels[:, -keep:], logits_to_keep=keep)
    if device == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        before = torch.cuda.memory_allocated()
    else:
        before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    loss = model(**inputs).loss
    loss.backward()
    if device == "cuda":
        torch.cuda.synchronize()
        peak = torch.cuda.max_memory_allocated()
    else:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    return {"loss": float(loss), "step_peak_mib": (peak - before) / 2**20}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--child", choices=["full", "keep"], help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(one_step(args.child == "keep", args.device)))
        return 0
    results = {}
    for variant in ("full", "keep"):
        cmd = [sys.executable, __file__, "--device", args.device, "--child", variant]
        done = subprocess.run(cmd, check=True, capture_output=True, text=True)
        results[variant] = json.loads(done.stdout.strip().splitlines()[-1])
    report = {
        "config": CONFIG,
        "batch": BATCH,
        "prompt_tokens": PROMPT,
        "target_tokens": TARGET,
        "device": args.device,
        "full_logits": results["full"],
        "logits_to_keep": results["keep"],
        "memory_ratio": round(
            results["full"]["step_peak_mib"] / max(results["keep"]["step_peak_mib"], 1e-9), 2
        ),
        "same_loss": abs(results["full"]["loss"] - results["keep"]["loss"]) < 1e-4,
    }
    text = json.dumps(report, indent=2)
    print(text)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
