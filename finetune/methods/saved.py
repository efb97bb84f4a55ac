"""Our own adapter format (bottleneck adapters, BitFit): only the tensors that trained.

`adapter_model.safetensors` holds the trainable parameters under their names in the base
model's state dict; `adapter_config.json` records what the method built, so `load` rebuilds the
same structure on a freshly loaded base model before the tensors go back in. Same file names as
peft's, so a run directory looks the same whatever the method.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, TypedDict

from finetune import __version__
from finetune.errors import FinetuneError
from finetune.run.layout import ADAPTER_CONFIG as CONFIG
from finetune.run.layout import ADAPTER_WEIGHTS as WEIGHTS

if TYPE_CHECKING:  # pragma: no cover
    from finetune.types import Model, StateDict, Tensor

PLAN_ATTR = "finetune_adapter_config"  # where the plan rides on the model until `save`


class AdapterPlan(TypedDict, total=False):
    """What a method of our own built (adapter_config.json): every method records its name and
    the new modules; bottleneck adapters also where and how wide they are."""

    method: str
    new_modules: list[str]
    targets: list[str]
    hook: str  # bottleneck.OUTPUT or bottleneck.RENORM (runs before it was recorded: none)
    hidden_size: int
    bottleneck_size: int
    non_linearity: str
    finetune_version: str


def attach_plan(model: Model, plan: AdapterPlan) -> None:
    """Keep the plan on the model, for `save` (a plain attribute, not a module or tensor)."""
    setattr(model, PLAN_ATTR, plan)


def attached_plan(model: Model) -> AdapterPlan:
    plan: AdapterPlan = getattr(model, PLAN_ATTR)
    return plan


def save_trained(
    model: Model,
    out_dir: Path,
    plan: AdapterPlan,
    method_name: str,
    state_dict: StateDict | None = None,
) -> None:
    """Write every trainable parameter (adapter + new modules) and the build plan; the values
    come from `state_dict` when one is given (whole tensors gathered from FSDP2's shards)."""
    from safetensors.torch import save_file

    from finetune.methods.guards import check_saved_adapter

    tensors = {
        name: (param if state_dict is None else _whole(state_dict, name)).detach().cpu()
        for name, param in model.named_parameters()
        if param.requires_grad
    }
    tensors = {name: tensor.contiguous() for name, tensor in tensors.items()}
    out_dir.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(out_dir / WEIGHTS), metadata={"format": "pt", "method": method_name})
    config: AdapterPlan = {**plan, "method": method_name, "finetune_version": __version__}
    (out_dir / CONFIG).write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")
    check_saved_adapter(out_dir, method_name)


def _whole(state_dict: StateDict, name: str) -> Tensor:
    """The gathered tensor of a parameter; FSDP's activation checkpointing wraps blocks, which
    puts `_checkpoint_wrapped_module.` in parameter names but not in the gathered keys."""
    return state_dict[name.replace("_checkpoint_wrapped_module.", "")]


def read_adapter_config(in_dir: Path, method_name: str) -> AdapterPlan:
    """The plan saved with the adapter; refuses an adapter written by another method."""
    path = in_dir / CONFIG
    if not path.exists():
        raise FinetuneError(
            f"{in_dir}: no {CONFIG}; this is not an adapter saved by finetune",
            fix="point at the run directory of a finished `finetune run`",
        )
    plan: AdapterPlan = json.loads(path.read_text(encoding="utf-8"))
    if plan.get("method") != method_name:
        raise FinetuneError(
            f"{path}: adapter was saved by method {plan.get('method')!r}, not {method_name!r}",
            fix="load it with the recipe it was trained with",
        )
    return plan


def load_trained(model: Model, in_dir: Path) -> Model:
    """Put saved tensors back; every saved tensor and every trainable parameter must match."""
    from safetensors.torch import load_file

    state = load_file(str(in_dir / WEIGHTS))
    params = dict(model.named_parameters())
    unexpected = [k for k in state if k not in params]
    expected = [n for n, p in params.items() if p.requires_grad]
    missing = [n for n in expected if n not in state]
    wrong = [k for k in state if k in params and params[k].shape != state[k].shape]
    if unexpected or missing or wrong:
        raise FinetuneError(
            f"{in_dir}: the saved adapter does not fit this base model "
            f"(unexpected {unexpected[:3]}, missing {missing[:3]}, wrong shape {wrong[:3]})",
            fix="load it on the base model and task it was trained with",
        )
    model.load_state_dict(state, strict=False)
    return model
