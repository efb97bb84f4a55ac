"""`validate`'s checks of the method's options against the rest of the recipe: the optimizer it
can train with (`train.optimizer`), LoftQ's 4-bit base, and the method's own option rules
(`Method.option_problems`). Each problem names its key and exits 2 before any weight loads."""

from __future__ import annotations

from finetune.errors import Problem
from finetune.methods import METHODS
from finetune.recipe.schema import Recipe


def method_problems(recipe: Recipe, where: str) -> list[Problem]:
    method = METHODS[recipe.method.name]
    problems = optimizer_problems(recipe, where)
    problems += loftq_problems(recipe, where)
    return problems + method.option_problems(recipe.method, where)


def optimizer_problems(recipe: Recipe, where: str) -> list[Problem]:
    chosen, method = recipe.train.optimizer, METHODS[recipe.method.name]
    if chosen in method.optimizers:
        return []
    able = ", ".join(n for n, m in METHODS.items() if chosen in m.optimizers)
    return [
        Problem(
            f"{where}: train.optimizer",
            f"{chosen} trains LoRA's A and B matrices in its own way, and method {method.name} "
            "has no such pair",
            f"use train.optimizer=adamw with {method.name}, or one of the methods {able}",
        )
    ]


def loftq_problems(recipe: Recipe, where: str) -> list[Problem]:
    """LoftQ chooses A, B against a 4-bit base's quantisation error: it needs that base, and
    bitsandbytes' 4-bit quantisation needs a CUDA GPU (torch is imported only then)."""
    if getattr(recipe.method, "init", None) != "loftq":
        return []
    key = f"{where}: method.init"
    quant = recipe.model.quantization
    if quant is None or quant.bits != 4:
        return [
            Problem(
                key,
                "loftq initialises LoRA to correct the quantisation error of a 4-bit base "
                "(QLoRA), and this recipe trains on a full-precision base",
                "set model.quantization.bits: 4 (needs a CUDA GPU and bitsandbytes), or use "
                "another method.init",
            )
        ]
    import torch

    if not torch.cuda.is_available():
        return [
            Problem(
                key,
                "loftq quantises the base with bitsandbytes' 4-bit kernels, which need a CUDA "
                "GPU, and this machine has none (a CPU-only install)",
                "run on a GPU, or use method.init: pissa / olora (no quantisation) here",
            )
        ]
    return []
