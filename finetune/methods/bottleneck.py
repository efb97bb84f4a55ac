"""Bottleneck adapters (Houlsby et al. 2019; Pfeiffer et al. 2020), our own: peft has none.

An adapter is down-projection -> non-linearity -> up-projection plus a residual. The
up-projection starts at zero, so a freshly adapted model computes exactly what the base model
computes, and training moves it away from there. Adapters attach to the output of the modules
the family table's regexes name (`attention_output`, `ffn_output`): the last projection of each
attention / feed-forward sub-layer, before its residual add. They live as a child module
`bottleneck` of that projection and run from a forward hook, so no base parameter is renamed
and there is no family-specific code here. Houlsby adapts both sub-layers, Pfeiffer only the
feed-forward one.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from pydantic import Field

from finetune.errors import FinetuneError
from finetune.methods.base import Method, MethodContext, freeze_all_but, inside
from finetune.methods.saved import load_trained, save_trained
from finetune.recipe.section import Section

if TYPE_CHECKING:  # pragma: no cover
    from finetune.models.architectures import Family

CHILD = "bottleneck"


class BottleneckConfig(Section):
    name: Literal["houlsby", "pfeiffer"] = Field(
        description="Method: bottleneck adapters (houlsby: after attention and FFN; pfeiffer: FFN)."
    )
    reduction_factor: int = Field(16, ge=1, description="hidden_size / bottleneck size.")
    bottleneck_size: int | None = Field(
        None, ge=1, description="Bottleneck width; overrides reduction_factor."
    )
    non_linearity: Literal["relu", "gelu", "swish", "tanh"] = Field(
        "relu", description="Activation between down- and up-projection."
    )
    layers: list[int] | None = Field(None, description="Layer indices to adapt; default all.")


def _run_adapter(module: Any, args: Any, output: Any) -> Any:
    """Forward hook: looks the adapter up on the module itself, so deepcopy/pickle keep working."""
    adapter = getattr(module, CHILD, None)
    if adapter is None:
        return output
    if isinstance(output, tuple):  # no projection in the table returns one, but be safe
        return (adapter(output[0]), *output[1:])
    return adapter(output)


def output_width(module: Any) -> int | None:
    """Output features of a projection: nn.Linear.out_features, or GPT-2 Conv1D.nf."""
    for attr in ("out_features", "nf"):
        value = getattr(module, attr, None)
        if isinstance(value, int):
            return value
    return None


def bottleneck_width(hidden: int, reduction_factor: int, bottleneck_size: int | None) -> int:
    """The recipe's bottleneck_size, else hidden_size // reduction_factor (at least 1)."""
    return bottleneck_size or max(1, hidden // reduction_factor)


def adapter_parameters(hidden: int, bottleneck: int) -> int:
    """Parameters of one adapter: two weight matrices and two bias vectors."""
    return 2 * hidden * bottleneck + bottleneck + hidden


def insertion_points(
    model: Any, family: Family, sites: tuple[str, ...], layers: list[int] | None, skip: list[str]
) -> list[str]:
    """Module names matched by the family's regexes for `sites`, in the chosen layers, outside
    newly initialised modules (those train whole anyway)."""
    patterns = [re.compile(getattr(family, site)) for site in sites]
    found = []
    for name, _ in model.named_modules():
        if inside(name, skip):
            continue
        for pattern in patterns:
            match = pattern.search(name)
            if match and (layers is None or int(match.group(1)) in layers):
                found.append(name)
                break
    return found


def inject(model: Any, targets: list[str], bottleneck: int, non_linearity: str) -> None:
    """Attach one adapter to each target module (as child `bottleneck`) and hook it in."""
    from finetune.methods.bottleneck_layer import BottleneckAdapter

    for name in targets:
        module = model.get_submodule(name)
        hidden = output_width(module)
        if hidden is None:
            raise FinetuneError(
                f"cannot attach a bottleneck adapter to {name} ({type(module).__name__}): "
                "its output width is unknown",
                fix="this family's attention_output/ffn_output regexes in models.py must name "
                "Linear or Conv1D projections",
            )
        weight = next(module.parameters())
        adapter = BottleneckAdapter(hidden, bottleneck, non_linearity)
        module.add_module(CHILD, adapter.to(device=weight.device, dtype=weight.dtype))
        module.register_forward_hook(_run_adapter)


class BottleneckMethod(Method):
    """Shared by Houlsby (attention + FFN) and Pfeiffer (FFN only)."""

    config_class = BottleneckConfig
    default_lr = 2e-3
    lr_source = (
        "the adapters papers use 1e-4..1e-3 on BERT-base; 2e-3 measured best on our SST-2 budget"
    )
    mergeable = False
    save_format = "finetune safetensors (adapter_model.safetensors + adapter_config.json)"
    sites: tuple[str, ...] = ()

    def owns_parameter(self, name: str, config: Any = None) -> bool:
        return f".{CHILD}." in f".{name}"

    def plan(self, model: Any, ctx: MethodContext) -> dict[str, Any]:
        """What to build: recorded in adapter_config.json so `load` rebuilds the same thing."""
        cfg = ctx.config
        targets = insertion_points(model, ctx.family, self.sites, cfg.layers, ctx.new_modules)
        if not targets:
            where = f" in layers {cfg.layers}" if cfg.layers is not None else ""
            raise FinetuneError(
                f"method {self.name}: no {' / '.join(self.sites)} module of this "
                f"{ctx.family.name} model matched{where}; no adapter would be added",
                fix="check method.layers (0-based layer indices of this model)",
            )
        hidden = output_width(model.get_submodule(targets[0])) or 0
        return {
            "method": self.name,
            "targets": targets,
            "hidden_size": hidden,
            "bottleneck_size": bottleneck_width(hidden, cfg.reduction_factor, cfg.bottleneck_size),
            "non_linearity": cfg.non_linearity,
            "new_modules": list(ctx.new_modules),
        }

    def apply(self, model: Any, ctx: MethodContext) -> Any:
        plan = self.plan(model, ctx)
        inject(model, plan["targets"], plan["bottleneck_size"], plan["non_linearity"])
        self.set_trainable(model, plan)
        return model

    def set_trainable(self, model: Any, plan: dict[str, Any]) -> None:
        """Adapters and new modules train, nothing else; `save` writes exactly these."""
        freeze_all_but(model, plan["new_modules"])
        for name, param in model.named_parameters():
            if self.owns_parameter(name):
                param.requires_grad_(True)
        model.finetune_adapter_config = plan

    def save(self, model: Any, out_dir: Path) -> None:
        save_trained(model, out_dir, model.finetune_adapter_config, self.name)

    def load(self, model: Any, in_dir: Path, ctx: MethodContext) -> Any:
        from finetune.methods.saved import read_adapter_config

        plan = read_adapter_config(in_dir, self.name)
        inject(model, plan["targets"], plan["bottleneck_size"], plan["non_linearity"])
        self.set_trainable(model, plan)
        return load_trained(model, in_dir)


class HoulsbyMethod(BottleneckMethod):
    name = "houlsby"
    description = "bottleneck adapters after every attention and feed-forward sub-layer"
    sites = ("attention_output", "ffn_output")


class PfeifferMethod(BottleneckMethod):
    name = "pfeiffer"
    description = "bottleneck adapters after every feed-forward sub-layer"
    sites = ("ffn_output",)
