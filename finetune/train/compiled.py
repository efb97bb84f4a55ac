"""`train.compile`: torch.compile for the training steps, paid once and cached for later runs.

What is compiled: each transformer block of the model (its `_no_split_modules` class, the unit
transformers itself repeats), in place with `Module.compile(dynamic=True)`. The blocks share
one compiled graph (dynamo inlines the modules, so six BERT layers compile once), one graph
serves every sequence length of the length-grouped batches (no recompile per length), and
nothing around them changes: parameter names, `state_dict`, the method's save and merge,
checkpoints and `--resume` see the very same modules (no `_orig_mod` wrapper). Evaluation and
generation run the blocks eagerly (`eager`): generate calls them with a new shape at every
token and a KV cache, which would recompile for no gain.

The compiled code is kept in the finetune cache (`compile/`, torch's inductor FX-graph and
AOTAutograd caches through `TORCHINDUCTOR_CACHE_DIR`), so a second run, `--resume`, `compare`,
`sweep` or `eval` of the same model, method and precision loads it instead of compiling again.
`auto` compiles only when that is expected to pay back within this run: when this model's
graphs are already cached (a run compiled them before) and the run is long enough to amortise
loading them, or when it is long enough to amortise a first compile. The log says which and why.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from finetune.cache import cache_home

if TYPE_CHECKING:  # pragma: no cover
    from finetune.types import Model

log = logging.getLogger(__name__)

# On a CPU the compiled blocks measured no faster per step on the quick start (0.93x in fp32,
# 1.01x cold / 1.04x warm in bf16; benchmarks/compile_step.py, benchmarks/results/
# compile_step.md), so `auto` leaves them eager there. On a GPU, where a step is bound by kernel
# launches, it compiles when the run amortises the compile: optimizer steps for a first compile
# and for loading cached graphs. These two are estimates (the CPU's 26-30 s cold and 5-6 s warm
# compile against a saving of a few ms a step), not yet measured on a GPU.
COLD_PAYBACK_STEPS = 600
WARM_PAYBACK_STEPS = 60
CPU_NOT_FASTER = (
    "on a CPU the compiled blocks measured no faster per step (quick start: 0.93x fp32, "
    "1.04x bf16); train.compile=true compiles anyway"
)
INDUCTOR_CACHE_ENV = "TORCHINDUCTOR_CACHE_DIR"


@dataclass(frozen=True)
class CompilePlan:
    enabled: bool
    why: str
    key: str  # the cache entry of this model, method and precision
    graphs: bool = False  # the whole training forward with CUDA graphs (train/graphs.py)


def compile_dir() -> Path:
    return cache_home() / "compile"


def graph_key(model: Model, method: str, precision: str) -> str:
    """What the compiled graphs depend on: the architecture's config, the method (it changes
    the blocks' modules), the precision, torch's version and the device kind."""
    import torch

    settings: dict[str, object] = getattr(getattr(model, "config", None), "to_dict", dict)()
    config = {k: v for k, v in settings.items() if not k.startswith("_") and k != "name_or_path"}
    device = "cuda" if torch.cuda.is_available() else "cpu"
    facts = {"config": config, "method": method, "precision": precision}
    facts.update(torch=torch.__version__, device=device)
    return hashlib.sha256(json.dumps(facts, sort_keys=True, default=str).encode()).hexdigest()[:16]


def _marker(key: str) -> Path:
    return compile_dir() / "finetune-warm" / f"{key}.json"


def is_warm(key: str) -> bool:
    return _marker(key).is_file()


def plan_compile(setting: bool | str, steps: int, key: str, device: str = "cpu") -> CompilePlan:
    """`train.compile` resolved: true/false as asked; auto on a GPU when it pays back within
    the run, never on a CPU (`device` is the torch device type)."""
    if setting is True:
        return CompilePlan(True, "train.compile=true", key)
    if setting is False:
        return CompilePlan(False, "train.compile=false", key)
    if device != "cuda":
        return CompilePlan(False, CPU_NOT_FASTER, key)
    if is_warm(key):
        if steps >= WARM_PAYBACK_STEPS:
            return CompilePlan(True, f"its compiled graphs are cached; {steps} steps", key)
        return CompilePlan(
            False, f"{steps} steps are too few to amortise loading the cached graphs", key
        )
    if steps >= COLD_PAYBACK_STEPS:
        return CompilePlan(True, f"{steps} steps amortise a first compile", key)
    return CompilePlan(
        False,
        f"no compiled graphs cached and {steps} steps < ~{COLD_PAYBACK_STEPS} to pay back a first "
        "compile; train.compile=true compiles and caches them for the next runs",
        key,
    )


def with_graphs(plan: CompilePlan, asked: bool, why_not: str | None) -> CompilePlan:
    """`train.cuda_graphs` on top of the plan: asked for, it compiles even where `auto` would
    not (the user chose it); where the run cannot be graphed (`why_not`), the blocks compile
    as the plan says."""
    if not asked:
        return plan
    if why_not is not None:
        log.info("train.cuda_graphs: off (%s); the blocks compile as train.compile says", why_not)
        return plan
    why = plan.why if plan.enabled else "train.cuda_graphs=true"
    return CompilePlan(True, why, f"{plan.key}-graphs", graphs=True)


def compiled_blocks(model: Model) -> list[Model]:
    """The model's transformer blocks (the classes transformers lists as `_no_split_modules`),
    leaving out any that hold the input embeddings."""
    from transformers import PreTrainedModel

    classes: set[str] = set()
    for module in model.modules():
        if isinstance(module, PreTrainedModel):
            classes.update(getattr(module, "_no_split_modules", None) or [])
    embeddings = getattr(model, "get_input_embeddings", lambda: None)()
    return [
        module
        for module in model.modules()
        if type(module).__name__ in classes and not any(m is embeddings for m in module.modules())
    ]


def compile_model(model: Model, plan: CompilePlan) -> int:
    """Compile the blocks in place (0 when the plan says no or the model names no blocks);
    the inductor caches go to the finetune cache unless the user pointed them elsewhere."""
    if not plan.enabled:
        log.info("train.compile: off (%s)", plan.why)
        return 0
    if plan.graphs:  # train/graphs.py compiles the forward around the model, not its blocks
        os.environ.setdefault(INDUCTOR_CACHE_ENV, str(compile_dir() / "inductor"))
        log.info(
            "train.compile: on (%s): the whole training forward, CUDA graphs on a GPU, batches "
            "padded to length buckets; compiled code cached in %s",
            plan.why,
            os.environ[INDUCTOR_CACHE_ENV],
        )
        return 0
    blocks = compiled_blocks(model)
    if not blocks:
        log.info("train.compile: off (this model names no transformer blocks to compile)")
        return 0
    os.environ.setdefault(INDUCTOR_CACHE_ENV, str(compile_dir() / "inductor"))
    for block in blocks:
        block.compile(dynamic=True)
    log.info(
        "train.compile: on (%s): %d %s blocks, compiled code cached in %s",
        plan.why,
        len(blocks),
        type(blocks[0]).__name__,
        os.environ[INDUCTOR_CACHE_ENV],
    )
    return len(blocks)


def mark_warm(plan: CompilePlan) -> None:
    """After a run compiled and trained: the next run of this model finds its graphs cached."""
    if not plan.enabled:
        return
    marker = _marker(plan.key)
    marker.parent.mkdir(parents=True, exist_ok=True)
    marker.write_text(json.dumps({"key": plan.key}) + "\n", encoding="utf-8")


@contextlib.contextmanager
def eager(model: Model) -> Iterator[None]:
    """Run the compiled blocks eagerly inside the block (evaluation, generation)."""
    saved = []
    for module in model.modules():
        compiled = getattr(module, "_compiled_call_impl", None)
        if compiled is not None:
            saved.append((module, compiled))
            module._compiled_call_impl = None
    try:
        yield
    finally:
        for module, compiled in saved:
            module._compiled_call_impl = compiled
