"""LoRA's initialisations (`method.init`) and per-module ranks (`rank_pattern`/`alpha_pattern`).

peft's default starts B at zero, so the adapted model starts as the base. The others start
elsewhere, each as peft implements it:

- `gaussian`: A from N(0, 1/r) instead of Kaiming-uniform;
- `orthogonal`: A and B from orthogonal rows (B not zero; peft subtracts nothing, r must be even);
- `pissa` (Meng et al. 2024), `olora` (Büyükakyüz 2024): A, B take the weight's top singular
  vectors (PiSSA) or a QR factorisation (OLoRA), and the base weight keeps the residual, so the
  model still starts as the base;
- `corda` (Yang et al. 2024): like PiSSA, from the SVD of the weight times the covariance of the
  layer's inputs on the run's first training batches;
- `eva` (Paischer et al. 2024): A from the SVD of the layer's inputs on the run's first
  training batches, ranks redistributed across layers (`eva_rho`), B zero, base untouched;
- `loftq` (Li et al. 2023): for a 4-bit base (QLoRA): A, B chosen so that Q(W) + BA ≈ W.

PiSSA, OLoRA and CorDA change the base weights, so their trained adapter cannot go onto the
original model as it is. peft's documented conversion (`save_pretrained(...,
path_initial_model_for_weight_conversion=...)`) turns it into a plain rank-2r LoRA adapter on
the original weights: ΔW = BA − B₀A₀ = [B | −B₀]·[A; A₀]. The initial adapter is saved right
after initialisation (in a temporary directory that lives as long as the model) and the run's
adapter is always saved converted, so `eval`, `predict`, `merge` and plain
`PeftModel.from_pretrained` load it on the unmodified base.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, cast

from pydantic import Field

from finetune.errors import FinetuneError, Problem

if TYPE_CHECKING:  # pragma: no cover
    from collections.abc import Mapping, Sequence

    from peft import LoraConfig, PeftModel

    from finetune.methods.base import Batch, MethodContext
    from finetune.types import Model, StateDict, Tensor

log = logging.getLogger(__name__)

LoraInit = Literal["default", "gaussian", "pissa", "olora", "eva", "corda", "loftq", "orthogonal"]
MUTATES_BASE = ("pissa", "olora", "corda")  # the base keeps a residual: convert at save
READS_DATA = ("eva", "corda")
INITIAL_ADAPTER_ATTR = "finetune_initial_adapter"

# the option fields, declared here and listed in LoraOptions (methods/peft_methods.py)
INIT_FIELD: Any = Field(
    "default",
    description="Initialisation: default (Kaiming A, zero B), gaussian, pissa, olora, eva, corda "
    "(eva/corda read training batches first), loftq (4-bit base), orthogonal.",
)
PISSA_ITERS_FIELD: Any = Field(
    None, ge=1, description="pissa: fast randomised SVD with N subspace iterations; null: full SVD."
)
INIT_BATCHES_FIELD: Any = Field(
    16, ge=1, le=100_000, description="eva/corda: training batches read before training."
)
EVA_RHO_FIELD: Any = Field(
    2.0, ge=1, description="eva: a layer may take up to rho x r of the rank budget (1: uniform)."
)
CORDA_METHOD_FIELD: Any = Field(
    "ipm",
    description="corda: ipm adapts the directions the data uses most; kpm keeps them, adapting "
    "the least used (knowledge-preserving).",
)
RANK_PATTERN_FIELD: Any = Field(
    {}, description="Per-module ranks, {module name or regex: r}; others use method.r."
)
ALPHA_PATTERN_FIELD: Any = Field(
    {}, description="Per-module alphas, {module name or regex: alpha}; others use method.alpha."
)


def init_kwargs(cfg: Any) -> dict[str, Any]:
    """The LoraConfig arguments of `method.init` and the per-module patterns."""
    from peft import EvaConfig, LoftQConfig
    from peft.tuners.lora.config import CordaConfig

    init = getattr(cfg, "init", "default")
    kwargs: dict[str, Any] = {
        "rank_pattern": dict(getattr(cfg, "rank_pattern", {}) or {}),
        "alpha_pattern": dict(getattr(cfg, "alpha_pattern", {}) or {}),
    }
    if init == "default":
        return kwargs
    value = init
    if init == "pissa" and cfg.pissa_iters:
        value = f"pissa_niter_{cfg.pissa_iters}"
    if init == "loftq":
        value = True  # replace_lora_weights_loftq re-initialises after the wrap
    kwargs["init_lora_weights"] = value
    if init == "eva":
        kwargs["eva_config"] = EvaConfig(rho=cfg.eva_rho, use_label_mask=False)
    if init == "corda":
        kwargs["corda_config"] = CordaConfig(corda_method=cfg.corda_method)
    if init == "loftq":
        kwargs["loftq_config"] = LoftQConfig(loftq_bits=4)
    return kwargs


def init_problems(cfg: Any, where: str) -> list[Problem]:
    """What peft would refuse late (or silently get wrong), said before any weight loads."""
    init = getattr(cfg, "init", "default")
    problems = []
    if init == "orthogonal" and cfg.r % 2:
        problems.append(
            Problem(
                f"{where}: method.r",
                "init orthogonal builds A and B from r/2 orthogonal pairs: r must be even, "
                f"not {cfg.r}",
                f"use method.r={cfg.r + 1}",
            )
        )
    if init in MUTATES_BASE and cfg.name == "dora":
        problems.append(
            Problem(
                f"{where}: method.init",
                f"{init} leaves a residual in the base weights, and peft converts the trained "
                "adapter back onto the original weights for LoRA only: DoRA's magnitudes would "
                "be normalised by the wrong weight",
                "use method.name=lora (or rslora) with this init, or init default with dora",
            )
        )
    if init in MUTATES_BASE and cfg.name == "rslora" and (cfg.rank_pattern or cfg.alpha_pattern):
        problems.append(
            Problem(
                f"{where}: method.rank_pattern",
                "peft cannot convert an rsLoRA adapter with per-module ranks or alphas "
                f"initialised by {init} back onto the original weights",
                "drop rank_pattern/alpha_pattern, or use method.name=lora",
            )
        )
    return problems


def apply_lora(model: Model, config: LoraConfig, ctx: MethodContext) -> Model:
    """get_peft_model plus the init's own steps: CorDA's covariance pass before the wrap,
    EVA's SVD pass and LoftQ's re-initialisation after it, the initial adapter kept last."""
    from peft import get_peft_model

    init = getattr(ctx.config, "init", "default")
    if init == "corda":
        _corda_pass(model, config, ctx)
    peft_model = get_peft_model(model, config)
    if init == "eva":
        _eva_pass(peft_model, ctx)
    if init == "loftq":
        from peft import replace_lora_weights_loftq

        replace_lora_weights_loftq(peft_model)
    if init in MUTATES_BASE:
        keep_initial_adapter(peft_model)
    return peft_model


def init_batches(ctx: MethodContext) -> Sequence[Batch]:
    """The run's first `init_batches` training batches (the loop's data path), or a refusal
    when the method was not given them (only training has data)."""
    if ctx.plan is None:
        raise FinetuneError(
            f"method.init: {ctx.config.init} reads training batches, and none were given",
            fix="this is a bug: RunSetup.for_training hands the method its batches",
        )
    return ctx.plan.batches(ctx.config.init_batches)


def _on_device(batch: Mapping[str, object], model: Model) -> dict[str, object]:
    """Tensors onto the model's device; plain values (`logits_to_keep`) as they are."""
    import torch

    device = next(model.parameters()).device
    return {
        key: value.to(device) if isinstance(value, torch.Tensor) else value
        for key, value in batch.items()
    }


def _corda_pass(model: Model, config: LoraConfig, ctx: MethodContext) -> None:
    import torch
    from peft.tuners.lora.corda import preprocess_corda

    batches = init_batches(ctx)
    started = time.perf_counter()
    log.info("corda: reading %d training batches for the input covariance", len(batches))

    def run_model() -> None:
        was_training = model.training
        model.eval()
        with torch.no_grad():
            for batch in batches:
                for row in single_rows(batch):  # peft's covariance hook reads one row a call
                    model(**_on_device(row, model))
        model.train(was_training)

    preprocess_corda(model, config, run_model=run_model)
    log.info("corda: done in %.1f s", time.perf_counter() - started)


TOKEN_KEYS = ("input_ids", "attention_mask", "token_type_ids", "position_ids")


def single_rows(batch: Batch) -> list[dict[str, object]]:
    """A batch as one-row batches without their padding (CorDA's hook squeezes the batch
    dimension away and would count padding positions in the covariance)."""
    import torch

    mask = batch.get("attention_mask")
    rows = []
    for i in range(batch["input_ids"].shape[0]):
        keep = mask[i].bool() if mask is not None else None
        row: dict[str, object] = {}
        for key, value in batch.items():
            if not isinstance(value, torch.Tensor):  # logits_to_keep: the same for every row
                row[key] = value
                continue
            one = value[i : i + 1]
            if keep is not None and key in TOKEN_KEYS and one.shape[-1] == keep.shape[0]:
                one = one[:, keep]
            row[key] = one
        rows.append(row)
    return rows


def _eva_pass(peft_model: Model, ctx: MethodContext) -> None:
    from peft import initialize_lora_eva_weights

    batches = [_on_device(b, peft_model) for b in init_batches(ctx)]
    started = time.perf_counter()
    log.info("eva: SVD of the adapted layers' inputs over %d training batches", len(batches))
    initialize_lora_eva_weights(
        peft_model,
        batches,
        prepare_model_inputs_fn=_model_inputs,
        prepare_layer_inputs_fn=eva_rows,
        show_progress_bar=False,
    )
    log.info("eva: done in %.1f s", time.perf_counter() - started)


def _model_inputs(
    model_input: Mapping[str, object], peft_config: LoraConfig
) -> Mapping[str, object]:
    return model_input


def eva_rows(
    layer_input: Tensor | Sequence[Tensor], model_input: Mapping[str, object], layer_name: str
) -> Tensor:
    """One row per real token of a layer's input. Encoder layers see the input's length
    (attention_mask), decoder layers of T5/bert2bert the target's (labels); a classifier's
    labels are one per example and mask nothing."""
    import torch

    x = layer_input if isinstance(layer_input, torch.Tensor) else layer_input[0]
    if x.dim() <= 2:
        return x
    batch, length = x.shape[0], x.shape[1]
    mask = None
    for key, masked in (("attention_mask", 0), ("labels", -100)):
        value = model_input.get(key)
        if (
            isinstance(value, torch.Tensor)
            and value.dim() == 2
            and tuple(value.shape) == (batch, length)
        ):
            mask = value != masked
            break
    if mask is None:
        return x.reshape(-1, x.shape[-1])
    return x[mask]


def keep_initial_adapter(peft_model: PeftModel) -> None:
    """Save the adapter as initialised, for peft's conversion at save time (module docstring):
    with `init_lora_weights=True` in its config, so loading it re-initialises nothing."""
    import shutil
    import tempfile
    import weakref

    root = Path(tempfile.mkdtemp(prefix="finetune-lora-init-"))
    weakref.finalize(peft_model, shutil.rmtree, root, True)
    config = cast("LoraConfig", peft_model.peft_config["default"])  # a LoRA method's
    chosen = config.init_lora_weights
    config.init_lora_weights = True
    try:
        peft_model.save_pretrained(str(root / "initial"), safe_serialization=True)
    finally:
        config.init_lora_weights = chosen
    setattr(peft_model, INITIAL_ADAPTER_ATTR, str(root / "initial"))


def initial_adapter(model: Model) -> str | None:
    """Where `keep_initial_adapter` saved this model's initial adapter, if it did."""
    return model.__dict__.get(INITIAL_ADAPTER_ATTR)


def keep_other_tensors(model: Model, out_dir: Path, state_dict: StateDict | None) -> None:
    """peft 0.21's conversion returns the lora_A / lora_B tensors only, dropping everything
    else the adapter holds (the head in `modules_to_save`, biases of `bias: all`): they are
    written back beside the converted ones, exactly as an unconverted save writes them."""
    from peft import get_peft_model_state_dict
    from safetensors.torch import load_file, save_file

    from finetune.run.layout import ADAPTER_WEIGHTS

    whole = get_peft_model_state_dict(model, state_dict=state_dict)
    path = out_dir / ADAPTER_WEIGHTS
    saved = load_file(str(path))
    for key, value in whole.items():
        if "lora_A" not in key and "lora_B" not in key:
            saved[key] = value.detach().cpu().contiguous()
    save_file(saved, str(path), metadata={"format": "pt"})
