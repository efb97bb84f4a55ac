"""Bottleneck adapters (Houlsby et al. 2019; Pfeiffer et al. 2020), our own: peft has none.

An adapter's branch is A(z) = up(act(down(z))); `up` starts at zero, so a freshly adapted model
computes exactly what the base model computes, and training moves it away from there. Where the
branch reads and where its result goes follows the papers and the `adapters` library's configs
(DoubleSeqBnConfig for Houlsby, SeqBnConfig for Pfeiffer), with x the sub-layer's input (its
residual) and h its output after the sub-layer dropout:

- Houlsby, attention and feed-forward sub-layers: h -> h + A(h), then the model's own
  residual add (and LayerNorm, post-LN): LN(x + h + A(h)), pre-LN: x + h + A(h).
- Pfeiffer, feed-forward sub-layer only, reads the stream after the residual add and
  LayerNorm: post-LN (BERT) with s = x + h: LN(s + A(LN(s))); pre-LN (GPT-2, T5) there is no
  LayerNorm after the add (the adapters library passes none), so s + A(s).

The family table's regexes in models.py name the modules: `attention_output` / `ffn_output`
(the dropout after the last projection, or the projection where none follows), `ffn_stream`
(post-LN: the LayerNorm after the feed-forward add; pre-LN: the module that returns the stream).
Adapters live as a child module `bottleneck` of that module and run from a forward hook, so no
base parameter is renamed and there is no family-specific code here.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from pydantic import Field, model_validator

from finetune.errors import FinetuneError
from finetune.methods.base import Method, MethodContext, freeze_all_but, inside
from finetune.methods.saved import (
    AdapterPlan,
    attach_plan,
    attached_plan,
    load_trained,
    save_trained,
)
from finetune.recipe.section import Section

if TYPE_CHECKING:  # pragma: no cover
    import torch

    from finetune.models.architecture import Architecture
    from finetune.types import Model, StateDict, Tensor

    # what a forward hook gets and gives: a block's output, or its tuple led by the hidden states
    Output = Tensor | tuple[Tensor, ...]

CHILD = "bottleneck"
# How an adapter is hooked in (recorded per run in adapter_config.json as "hook"):
OUTPUT = "output"  # the module's output o becomes o + A(o)
RENORM = "renormalise"  # a LayerNorm with input s and output LN(s) returns LN(s + A(LN(s)))
NON_LINEARITY = {"houlsby": "swish", "pfeiffer": "relu"}  # the adapters library's defaults


class BottleneckOptions(Section):
    name: Literal["houlsby", "pfeiffer"] = Field(
        description="Method: bottleneck adapters (houlsby: after attention and FFN; pfeiffer: FFN)."
    )
    reduction_factor: int = Field(16, ge=1, description="hidden_size / bottleneck size.")
    bottleneck_size: int | None = Field(
        None, ge=1, description="Bottleneck width; overrides reduction_factor."
    )
    non_linearity: Literal["relu", "gelu", "swish", "tanh"] | None = Field(
        None,
        description="Activation between down- and up-projection; null: swish for houlsby, relu "
        "for pfeiffer (as published).",
    )
    layers: list[int] | None = Field(None, description="Layer indices to adapt; default all.")

    @model_validator(mode="before")
    @classmethod
    def _published_non_linearity(cls, data: object) -> object:
        """Houlsby's reference uses swish, Pfeiffer's relu (the `adapters` library's
        DoubleSeqBnConfig / SeqBnConfig); filled in here so recipe.yaml shows what ran."""
        if isinstance(data, dict) and data.get("non_linearity") is None:
            default = NON_LINEARITY.get(data.get("name", ""))
            if default:
                data = {**data, "non_linearity": default}
        return data


def _run_adapter(module: torch.nn.Module, args: tuple[Tensor, ...], output: Output) -> Output:
    """Forward hook: looks the adapter up on the module itself, so deepcopy/pickle keep working."""
    adapter = getattr(module, CHILD, None)
    if adapter is None:
        return output
    if isinstance(output, tuple):  # a pre-LN block may return (hidden_states, ...)
        return (adapter(output[0]), *output[1:])
    return adapter(output)


def _renormalise(module: torch.nn.Module, args: tuple[Tensor, ...], output: Output) -> Output:
    """Forward hook on a post-LN LayerNorm: LN(s) -> LN(s + A(LN(s))), s its input (Pfeiffer).

    `module.forward` (not `module(...)`) re-applies the same LayerNorm without re-entering hooks.
    """
    adapter = getattr(module, CHILD, None)
    if adapter is None:
        return output
    stream = args[0]
    return module.forward(stream + adapter.delta(output))


HOOKS = {OUTPUT: _run_adapter, RENORM: _renormalise}


def output_width(module: object) -> int | None:
    """Output features of a projection: nn.Linear.out_features, or GPT-2 Conv1D.nf."""
    for attr in ("out_features", "nf"):
        value = getattr(module, attr, None)
        if isinstance(value, int):
            return value
    return None


def site_width(model: Model, name: str, family: Architecture | None = None) -> int | None:
    """Width of the hidden states at a module: a projection's output, a LayerNorm's shape, else
    the hidden size in the config of the nearest enclosing model (bert2bert has two)."""
    module = model.get_submodule(name)
    width = output_width(module)
    shape = getattr(module, "normalized_shape", None)
    if width is None and shape:
        width = int(shape[-1])
    if width is not None:
        return width
    keys = family.hidden_size_keys if family else ("hidden_size", "d_model", "n_embd")
    parts = name.split(".")
    for end in range(len(parts), -1, -1):
        config = getattr(model.get_submodule(".".join(parts[:end])), "config", None)
        for key in keys:
            value = getattr(config, key, None)
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
    model: Model,
    family: Architecture,
    sites: tuple[str, ...],
    layers: list[int] | None,
    skip: list[str],
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
            if match and (layers is None or _layer_index(match) in layers):
                found.append(name)
                break
    return found


def _layer_index(match: re.Match[str]) -> int:
    """The first group that matched (a regex may offer alternatives, e.g. T5 encoder/decoder)."""
    return int(next(g for g in match.groups() if g is not None))


def inject(
    model: Model, targets: list[str], bottleneck: int, non_linearity: str, hook: str = OUTPUT
) -> None:
    """Attach one adapter to each target module (as child `bottleneck`) and hook it in."""
    from finetune.methods.bottleneck_layer import BottleneckAdapter

    weight = next(model.parameters())
    for name in targets:
        module = model.get_submodule(name)
        hidden = site_width(model, name)
        if hidden is None:
            raise FinetuneError(
                f"cannot attach a bottleneck adapter to {name} ({type(module).__name__}): "
                "its hidden width is unknown",
                fix="this family's bottleneck regexes in models.py must name a projection, a "
                "LayerNorm or a module inside a model whose config gives hidden_size",
            )
        adapter = BottleneckAdapter(hidden, bottleneck, non_linearity)
        module.add_module(CHILD, adapter.to(device=weight.device, dtype=weight.dtype))
        module.register_forward_hook(HOOKS[hook])


class BottleneckMethod(Method):
    """Shared by Houlsby (attention + FFN) and Pfeiffer (FFN stream)."""

    config_class = BottleneckOptions
    default_lr = 2e-3
    lr_source = (
        "the adapters papers use 1e-4..1e-3 on BERT-base; 2e-3 measured best on our SST-2 budget"
    )
    mergeable = False
    library = "finetune"  # adapter_model.safetensors + adapter_config.json of our own
    sites: tuple[str, ...] = ()

    def hook(self, family: Architecture) -> str:
        """How this method's adapters are hooked in on this family."""
        return OUTPUT

    def owns_parameter(self, name: str, config: object = None) -> bool:
        return f".{CHILD}." in f".{name}"

    def plan(self, model: Model, ctx: MethodContext) -> AdapterPlan:
        """What to build: recorded in adapter_config.json so `load` rebuilds the same thing."""
        cfg = ctx.config
        targets = insertion_points(model, ctx.family, self.sites, cfg.layers, ctx.new_modules)
        if not targets:
            where = f" in layers {cfg.layers}" if cfg.layers is not None else ""
            raise FinetuneError(
                f"method {self.name}: no {' / '.join(self.sites)} module of this "
                f"{ctx.family.model_type} model matched{where}; no adapter would be added",
                fix="check method.layers (0-based layer indices of this model)",
            )
        hidden = site_width(model, targets[0], ctx.family) or 0
        return {
            "method": self.name,
            "targets": targets,
            "hook": self.hook(ctx.family),
            "hidden_size": hidden,
            "bottleneck_size": bottleneck_width(hidden, cfg.reduction_factor, cfg.bottleneck_size),
            "non_linearity": cfg.non_linearity or NON_LINEARITY[self.name],
            "new_modules": list(ctx.new_modules),
        }

    def apply(self, model: Model, ctx: MethodContext) -> Model:
        plan = self.plan(model, ctx)
        inject(model, plan["targets"], plan["bottleneck_size"], plan["non_linearity"], plan["hook"])
        self.set_trainable(model, plan)
        return model

    def set_trainable(self, model: Model, plan: AdapterPlan) -> None:
        """Adapters and new modules train, nothing else; `save` writes exactly these."""
        freeze_all_but(model, plan["new_modules"])
        for name, param in model.named_parameters():
            if self.owns_parameter(name):
                param.requires_grad_(True)
        attach_plan(model, plan)

    def save(self, model: Model, out_dir: Path, state_dict: StateDict | None = None) -> None:
        save_trained(model, out_dir, attached_plan(model), self.name, state_dict)

    def load(self, model: Model, in_dir: Path, ctx: MethodContext) -> Model:
        from finetune.methods.saved import read_adapter_config

        plan = read_adapter_config(in_dir, self.name)
        # runs saved before "hook" was recorded had every adapter on a projection's output
        hook = plan.get("hook", OUTPUT)
        inject(model, plan["targets"], plan["bottleneck_size"], plan["non_linearity"], hook)
        self.set_trainable(model, plan)
        return load_trained(model, in_dir)


class HoulsbyMethod(BottleneckMethod):
    name = "houlsby"
    description = "bottleneck adapters after every attention and feed-forward sub-layer"
    sites = ("attention_output", "ffn_output")


class PfeifferMethod(BottleneckMethod):
    name = "pfeiffer"
    description = "a bottleneck adapter on the stream after every feed-forward sub-layer"
    sites = ("ffn_stream",)

    def hook(self, family: Architecture) -> str:
        return RENORM if family.post_ln else OUTPUT
