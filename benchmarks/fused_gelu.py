"""GPT-2 with its Python `gelu_new` vs the fused tanh GELU that finetune swaps in at load time.

Random-initialised gpt2 (124M, the real shape), fp32 on the CPU. Times a training step (forward +
backward; weight gradients only for `c_attn`, as under LoRA the frozen layers still pass
gradients through) and an evaluation forward, best of N interleaved runs, and counts the bytes
autograd keeps for the backward pass.

    python benchmarks/fused_gelu.py                  # batch 8 x 256 tokens
    python benchmarks/fused_gelu.py --batch 2 --tokens 64 --repeats 1
"""

from __future__ import annotations

import argparse
import copy
import platform
import time
from typing import Any


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--tokens", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    return parser.parse_args()


def train_step(model: Any, ids: Any) -> tuple[float, int]:
    """Seconds of one forward + backward, and the bytes saved for the backward pass."""
    import torch

    saved = 0

    def pack(tensor: torch.Tensor) -> torch.Tensor:
        nonlocal saved
        saved += tensor.numel() * tensor.element_size()
        return tensor

    start = time.perf_counter()
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        loss = model(input_ids=ids, labels=ids).loss
    loss.backward()
    model.zero_grad(set_to_none=True)
    return time.perf_counter() - start, saved


def eval_step(model: Any, ids: Any) -> float:
    import torch

    start = time.perf_counter()
    with torch.inference_mode():
        model(input_ids=ids)
    return time.perf_counter() - start


def main() -> None:
    import torch
    import transformers

    from finetune.models.activations import fuse_gelu

    args = parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    plain = transformers.GPT2LMHeadModel(transformers.GPT2Config()).train()
    for name, param in plain.named_parameters():
        param.requires_grad_("c_attn" in name)
    fused = copy.deepcopy(plain)
    swapped = fuse_gelu(fused)
    ids = torch.randint(0, 50257, (args.batch, args.tokens))
    times: dict[str, list[float]] = {"plain": [], "fused": []}
    evals: dict[str, list[float]] = {"plain": [], "fused": []}
    saved: dict[str, int] = {}
    for model in (plain, fused):
        train_step(model, ids)  # warm-up
    for _ in range(args.repeats):
        for label, model in (("plain", plain), ("fused", fused)):
            seconds, saved[label] = train_step(model, ids)
            times[label].append(seconds)
            evals[label].append(eval_step(model, ids))
    best = {k: min(v) for k, v in times.items()}
    best_eval = {k: min(v) for k, v in evals.items()}
    print(
        f"fused tanh GELU vs gelu_new: random gpt2 (124M), fp32, batch {args.batch} x "
        f"{args.tokens} tokens, {args.threads} threads, best of {args.repeats}"
    )
    print(
        f"machine: {platform.machine()}, torch {torch.__version__}, "
        f"transformers {transformers.__version__}; {swapped} activation modules swapped"
    )
    print("| | gelu_new (as loaded by transformers) | fused (as loaded by finetune) | ratio |")
    print("|---|---|---|---|")
    print(
        f"| train step s | {best['plain']:.3f} | {best['fused']:.3f} | "
        f"{best['plain'] / best['fused']:.2f}x |"
    )
    print(
        f"| eval forward s | {best_eval['plain']:.3f} | {best_eval['fused']:.3f} | "
        f"{best_eval['plain'] / best_eval['fused']:.2f}x |"
    )
    print(
        f"| saved for backward MiB | {saved['plain'] / 2**20:.0f} | "
        f"{saved['fused'] / 2**20:.0f} | {saved['fused'] / saved['plain']:.2f} |"
    )


if __name__ == "__main__":
    main()
