"""One autocast copy of an input that several linear layers read.

Under bf16 (or fp16) autocast every linear layer casts its float32 input to the compute dtype
itself. An attention block's query, key and value projections read the same hidden states, and
so do LoRA's A matrices beside them; a gated MLP's gate and up projections read the same input.
A step therefore casts the same tensor up to five times per block, and converts each consumer's
gradient back to float32 in the backward pass. Casting the block's input once, before its
forward, gives the consumers bit-for-bit the inputs autocast would have given them (its cast is
the same round-to-nearest), so the forward pass computes the same numbers. In the backward pass
the consumers' gradients then add up in the compute dtype before the one conversion back, as in
a model held in bf16, instead of in float32: a rounding difference in gradients only.

Applied only where that is exactly what happens, checked on the block's forward source: the
forward's first argument is read only as the input of calls to the block's own child layers, at
least two of them, or for its shape (`shape`, `size`, `ndim`, `dim`, `device`; not `dtype`,
which the cast would change), and every such child casts its input as autocast does: a plain
`nn.Linear`, or a plain LoRA layer whose input reaches its A matrix uncast (no dropout, no
variant such as DoRA; models/frozen_dtype.py's `uncast_lora_inputs`) or whose A matrix is held in
the compute dtype already (inference). That covers BERT-family and Llama-family attention and
gated MLPs; blocks that also read the input themselves (T5's attention picks key/value states
from it) are left alone.
"""

from __future__ import annotations

import ast
import functools
import inspect
import logging
import textwrap
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # pragma: no cover
    import torch

    from finetune.types import Model

log = logging.getLogger(__name__)

# attributes of the input that do not depend on its dtype
SHAPE_READS = frozenset({"shape", "size", "ndim", "dim", "device"})
HOOKED = "_finetune_shared_cast"  # set on a block once its hook is registered


def share_input_casts(model: Model, dtype: torch.dtype) -> int:
    """Cast the input of each qualifying block to `dtype` once, under autocast; how many."""
    shared = 0
    for module in model.modules():
        reads = None if hasattr(module, HOOKED) else consumers(module, dtype)
        if reads is None:
            continue
        module.register_forward_pre_hook(
            functools.partial(_cast_input, reads[0], dtype), with_kwargs=True
        )
        setattr(module, HOOKED, dtype)
        shared += 1
    if shared:
        log.debug("one %s cast of the input shared by its linear layers: %d blocks", dtype, shared)
    return shared


def consumers(module: torch.nn.Module, dtype: torch.dtype) -> tuple[str, frozenset[str]] | None:
    """The forward's input name and the child layers that read it, when the block qualifies."""
    children = dict(module.named_children())
    if sum(_casts_like_autocast(c, dtype) for c in children.values()) < 2:
        return None
    reads = forward_reads(_forward_function(module))
    if reads is None:
        return None
    name, called = reads
    if len(called) < 2 or not all(
        c in children and _casts_like_autocast(children[c], dtype) for c in called
    ):
        return None
    return name, called


def _forward_function(module: torch.nn.Module) -> Callable[..., Any]:
    """The forward that runs: an instance's own (a swapped forward) before its class's."""
    own = vars(module).get("forward")
    return getattr(own, "__func__", own) if own is not None else type(module).forward


@functools.cache
def forward_reads(forward: Callable[..., Any]) -> tuple[str, frozenset[str]] | None:
    """`source_reads` of the forward's source; None when it has none (built at run time)."""
    try:
        return source_reads(textwrap.dedent(inspect.getsource(forward)))
    except (OSError, TypeError):
        return None


def source_reads(source: str) -> tuple[str, frozenset[str]] | None:
    """(input name, child layers called with it) when the function's first argument after
    `self` is read only as the sole argument of `self.<child>(...)` calls or for its shape."""
    try:
        tree = ast.parse(source)
    except SyntaxError:
        return None
    function = tree.body[0] if tree.body else None
    if not isinstance(function, ast.FunctionDef | ast.AsyncFunctionDef):
        return None
    params = function.args.posonlyargs + function.args.args
    if len(params) < 2:
        return None
    name = params[1].arg
    parents = {child: node for node in ast.walk(function) for child in ast.iter_child_nodes(node)}
    called: set[str] = set()
    for node in ast.walk(function):
        if not isinstance(node, ast.Name) or node.id != name:
            continue
        if not isinstance(node.ctx, ast.Load):
            return None  # reassigned: later reads are of something else
        child = _self_call(parents.get(node), node)
        if child is not None:
            called.add(child)
            continue
        parent = parents.get(node)
        if isinstance(parent, ast.Attribute) and parent.attr in SHAPE_READS:
            continue
        return None
    return name, frozenset(called)


def _self_call(parent: ast.AST | None, node: ast.Name) -> str | None:
    """The child's name when `parent` is `self.<child>(node)` with `node` its only argument."""
    if not isinstance(parent, ast.Call) or parent.args != [node] or parent.keywords:
        return None
    func = parent.func
    if isinstance(func, ast.Attribute) and isinstance(func.value, ast.Name):
        return func.attr if func.value.id == "self" else None
    return None


def _casts_like_autocast(layer: torch.nn.Module, dtype: torch.dtype) -> bool:
    """Whether `layer` does nothing with its input but hand it to autocast's matrix products."""
    import torch
    from peft.tuners.lora.layer import Linear as LoraLinear

    if type(layer) is torch.nn.Linear:
        return True
    if not isinstance(layer, LoraLinear) or type(layer.get_base_layer()) is not torch.nn.Linear:
        return False
    if getattr(layer, "lora_variant", None):
        return False
    if not all(isinstance(d, torch.nn.Identity) for d in layer.lora_dropout.values()):
        return False
    uncast = not getattr(layer, "cast_input_dtype_enabled", True)
    return uncast or all(a.weight.dtype == dtype for a in layer.lora_A.values())


def _cast_input(
    name: str, dtype: torch.dtype, module: torch.nn.Module, args: tuple, kwargs: dict
) -> tuple[tuple, dict] | None:
    """Forward pre-hook: the float32 input in `dtype` while autocast is on, else untouched."""
    import torch

    x = args[0] if args else kwargs.get(name)
    if not isinstance(x, torch.Tensor) or x.dtype != torch.float32:
        return None
    if not _autocast_on(x.device.type, dtype):
        return None
    if args:
        return (x.to(dtype), *args[1:]), kwargs
    return args, {**kwargs, name: x.to(dtype)}


def _autocast_on(device_type: str, dtype: torch.dtype) -> bool:
    import torch

    try:
        on = torch.is_autocast_enabled(device_type)
        return bool(on) and torch.get_autocast_dtype(device_type) == dtype
    except (TypeError, AttributeError):  # torch < 2.4: the per-device functions
        if device_type == "cpu":
            on = torch.is_autocast_cpu_enabled()
            return on and torch.get_autocast_cpu_dtype() == dtype
        on = torch.is_autocast_enabled()
        return on and torch.get_autocast_gpu_dtype() == dtype
