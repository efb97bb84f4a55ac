"""peft-backed methods: thin mappings from recipe sections onto peft configs.

The classification head and any newly initialised modules go into `modules_to_save`
explicitly, so that they train and are saved with the adapter whatever the head is called
(peft only guesses 'classifier'/'score'; peft#310, #577, #876). Modules inside those new
modules are excluded from `target_modules` (bert2bert cross-attention contains `query`/`value`),
so peft never nests an adapter inside a module it also copies whole.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, TypedDict, Union, cast

from pydantic import Field

from finetune.errors import FinetuneError, first_line
from finetune.methods.base import Method, MethodContext
from finetune.methods.lora_init import (
    ALPHA_PATTERN_FIELD,
    CORDA_METHOD_FIELD,
    EVA_RHO_FIELD,
    INIT_BATCHES_FIELD,
    INIT_FIELD,
    PISSA_ITERS_FIELD,
    RANK_PATTERN_FIELD,
    LoraInit,
)
from finetune.methods.lora_variants import LoraVariants
from finetune.methods.wrapped import peft_model
from finetune.recipe.section import Section

if TYPE_CHECKING:  # pragma: no cover
    from peft import PeftConfig

    from finetune.models.architecture import Architecture
    from finetune.types import Model, PretrainedModel, StateDict

PEFT_TASK_TYPES = {"classification": "SEQ_CLS", "seq2seq": "SEQ_2_SEQ_LM", "causal": "CAUSAL_LM"}

# Why a combination cannot work, checked against the installed transformers 5 / peft 0.21.
NO_CACHE_FOR_CLASSIFIERS = (
    "prefix tuning injects virtual keys/values through `past_key_values`, which transformers 5 "
    "sequence-classification models no longer accept, so peft refuses the model; use prompt "
    "tuning or LoRA for classification"
)
T5_CLS_NO_EMBEDS = (
    "prompt tuning feeds input embeddings, which T5ForSequenceClassification does not accept "
    "(NotImplementedError in transformers)"
)
GPT2_CLS_POOLING = (
    "prompt tuning feeds input embeddings, and GPT-2 classification then cannot find the last "
    "non-padding token: right-padded rows would be classified from a padding position"
)

TargetModules = Union[Literal["auto", "all-linear"], list[str]]


class LoraOptions(Section):
    name: Literal["lora", "dora", "rslora"] = Field(
        description="Method: LoRA, DoRA (weight-decomposed) or rsLoRA (rank-stabilised)."
    )
    r: int = Field(8, ge=1, le=1024, description="Rank of the low-rank update.")
    alpha: float = Field(16.0, gt=0, description="Scaling numerator (alpha / r, or sqrt(r)).")
    dropout: float = Field(0.05, ge=0, lt=1, description="Dropout on the LoRA input.")
    target_modules: TargetModules = Field(
        "auto", description="Modules to adapt: auto (family table), all-linear, or a list."
    )
    bias: Literal["none", "all", "lora_only"] = Field("none", description="Which biases train.")
    init: LoraInit = INIT_FIELD
    pissa_iters: int | None = PISSA_ITERS_FIELD
    init_batches: int = INIT_BATCHES_FIELD
    eva_rho: float = EVA_RHO_FIELD
    corda_method: Literal["ipm", "kpm"] = CORDA_METHOD_FIELD
    rank_pattern: dict[str, int] = RANK_PATTERN_FIELD
    alpha_pattern: dict[str, float] = ALPHA_PATTERN_FIELD


class IA3Options(Section):
    name: Literal["ia3"] = Field(description="Method: (IA)^3 learned rescaling vectors.")
    target_modules: TargetModules = Field("auto", description="Modules to rescale.")
    feedforward_modules: Union[Literal["auto"], list[str]] = Field(
        "auto", description="Which targets are feed-forward (scaled on the input)."
    )


class PrefixOptions(Section):
    name: Literal["prefix"] = Field(description="Method: prefix tuning (virtual key/values).")
    num_virtual_tokens: int = Field(20, ge=1, le=512, description="Prefix length.")
    projection: bool = Field(False, description="Reparameterise the prefix through an MLP.")


class PromptOptions(Section):
    name: Literal["prompt"] = Field(description="Method: prompt tuning (soft input tokens).")
    num_virtual_tokens: int = Field(20, ge=1, le=512, description="Soft prompt length.")
    init_text: str | None = Field(None, description="Initialise the prompt from this text.")


def resolve_targets(value: str | list[str], default: tuple[str, ...]) -> str | list[str]:
    """`auto` -> the family table's list; `all-linear` or an explicit list pass through."""
    if value == "auto":
        return list(default)
    return value


def exclude_pattern(new_modules: list[str]) -> str | None:
    """A regex (peft full-matches it) for every module inside a newly initialised module."""
    if not new_modules:
        return None
    names = "|".join(re.escape(m) for m in new_modules)
    return rf"(?:.*\.)?(?:{names})(?:\..*)?"


def _targets_error(exc: Exception, ctx: MethodContext) -> FinetuneError:
    first = first_line(exc)
    return FinetuneError(
        f"method {ctx.config.name}: peft cannot wrap this {ctx.family.model_type} model: {first}",
        fix="check method.target_modules (and feedforward_modules) against the module names of "
        f"this model; 'auto' uses the {ctx.family.model_type} family table",
    )


class PeftMethod(Method):
    """Shared apply/save/load/merge for every method whose weights peft owns."""

    mergeable = True
    library = "peft"  # PeftModel.from_pretrained loads the adapter
    markers: tuple[str, ...] = ("lora_", "modules_to_save", "ia3_l", "prompt_encoder")

    def peft_config(self, model: Model, ctx: MethodContext) -> PeftConfig:  # pragma: no cover
        raise NotImplementedError

    def owns_parameter(self, name: str, config: object = None) -> bool:
        return any(marker in name for marker in self.markers)

    def apply(self, model: Model, ctx: MethodContext) -> Model:
        config = self.peft_config(model, ctx)
        try:
            return self.wrap(model, config, ctx)
        except ValueError as exc:  # peft's "Target modules ... not found" and friends
            raise _targets_error(exc, ctx) from None

    def wrap(self, model: Model, config: PeftConfig, ctx: MethodContext) -> Model:
        """The base wrapped by peft as `config` says (a method may add its own steps)."""
        from peft import get_peft_model

        return get_peft_model(cast("PretrainedModel", model), config)

    def save(self, model: Model, out_dir: Path, state_dict: StateDict | None = None) -> None:
        from finetune.methods.guards import check_saved_adapter

        peft = peft_model(model)
        peft.save_pretrained(str(out_dir), safe_serialization=True, state_dict=state_dict)
        check_saved_adapter(out_dir, self.name)

    def load(self, model: Model, in_dir: Path, ctx: MethodContext) -> Model:
        from peft import PeftModel

        return PeftModel.from_pretrained(model, str(in_dir), is_trainable=False)

    multi_adapter = True

    def load_named(
        self, model: Model, in_dir: Path, ctx: MethodContext, adapter_name: str
    ) -> Model:
        from peft import PeftModel

        if isinstance(model, PeftModel):
            model.load_adapter(str(in_dir), adapter_name=adapter_name, is_trainable=False)
            return model
        return PeftModel.from_pretrained(
            model, str(in_dir), adapter_name=adapter_name, is_trainable=False
        )

    def activate(self, model: Model, adapter_name: str) -> None:
        peft_model(model).set_adapter(adapter_name)

    def merge(self, model: Model) -> PretrainedModel:
        from finetune.methods.saved_modules import unwrap_saved_modules

        unwrap_saved_modules(model)
        return cast("PretrainedModel", peft_model(model).merge_and_unload())


class LoraMethod(LoraVariants, PeftMethod):
    name = "lora"
    config_class = LoraOptions
    default_lr = 2e-3
    lr_source = "measured on the quick start (SST-2): 2e-3 beats 5e-4 by about 1 point of accuracy"
    quantizable = True
    description = "low-rank updates on the attention projections (peft LoraConfig)"
    no_decay = ("lora_magnitude_vector",)  # DoRA's magnitudes start at ||W||
    group = "lora-family"
    optimizers: tuple[str, ...] = ("adamw", "loraplus", "lorafa")

    def owns_parameter(self, name: str, config: object = None) -> bool:
        """`bias: all` trains every bias on purpose; `bias: lora_only` only those of the
        LoRA-wrapped modules, which peft keeps as `<target>.base_layer.bias`: any other
        trainable bias is a leak."""
        bias = getattr(config, "bias", "none")
        if bias == "all" and (name == "bias" or name.endswith(".bias")):
            return True
        if bias == "lora_only" and name.endswith(".base_layer.bias"):
            return True
        return super().owns_parameter(name, config)

    def peft_config(self, model: Model, ctx: MethodContext) -> PeftConfig:
        import peft

        from finetune.methods.lora_init import init_kwargs

        cfg = ctx.config
        return peft.LoraConfig(
            task_type=PEFT_TASK_TYPES.get(ctx.task_kind),
            r=cfg.r,
            lora_alpha=cfg.alpha,
            lora_dropout=cfg.dropout,
            target_modules=resolve_targets(cfg.target_modules, ctx.family.lora_targets),
            exclude_modules=exclude_pattern(ctx.new_modules),
            bias=cfg.bias,
            use_dora=self.name == "dora",
            use_rslora=self.name == "rslora",
            modules_to_save=list(ctx.new_modules) or None,
            **init_kwargs(cfg),
        )


class DoraMethod(LoraMethod):
    name = "dora"
    description = "LoRA with the weight split into magnitude and direction (use_dora)"
    # LoRA-FA pairs every parameter named lora_* as (A, B): the magnitude vector breaks the pairs
    optimizers = ("adamw", "loraplus")
    arithmetic = False  # peft's add_weighted_adapter leaves the magnitude vectors out
    reads_base_weights = True  # the magnitude's ||W + BA|| is computed outside autocast


class RsLoraMethod(LoraMethod):
    name = "rslora"
    description = "LoRA scaled by alpha/sqrt(r), stable at high rank (use_rslora)"


class IA3Method(PeftMethod):
    name = "ia3"
    config_class = IA3Options
    default_lr = 5e-3
    lr_source = (
        "IA3 vectors start at 1 and move slowly: Liu et al. 2022 use 3e-3; 5e-3 measured here"
    )
    description = "learned rescaling of keys, values and feed-forward activations (peft IA3Config)"
    no_decay = ("ia3_l",)  # the rescaling vectors start at 1

    def peft_config(self, model: Model, ctx: MethodContext) -> PeftConfig:
        import peft

        cfg = ctx.config
        targets = resolve_targets(cfg.target_modules, ctx.family.ia3_targets)
        return peft.IA3Config(
            task_type=PEFT_TASK_TYPES.get(ctx.task_kind),
            target_modules=targets,
            feedforward_modules=feedforward_for(cfg.feedforward_modules, targets, ctx.family),
            exclude_modules=exclude_pattern(ctx.new_modules),
            modules_to_save=list(ctx.new_modules) or None,
        )


def feedforward_for(
    value: str | list[str], targets: str | list[str], family: Architecture
) -> list[str]:
    """peft requires feed-forward modules to be a subset of the targets: `auto` keeps the
    family's feed-forward names that are also targeted."""
    if value != "auto":
        return list(value)
    default = list(family.ia3_feedforward)
    if isinstance(targets, list):
        return [m for m in default if m in targets]
    return default


class PromptDims(TypedDict, total=False):
    """What peft's prompt-learning configs take when they cannot read the model's shape."""

    num_layers: int
    token_dim: int
    num_attention_heads: int


def prompt_dims(model: Model) -> PromptDims:
    """num_layers/token_dim/heads for peft prompt learning when it cannot read them itself.

    peft reads them from the top-level config; an EncoderDecoderModel (bert2bert) keeps them in
    `config.decoder`, where the prefix's keys/values and the virtual tokens' width live.
    """
    config = model.config
    sub = getattr(config, "decoder", None)
    if not getattr(config, "is_encoder_decoder", False) or sub is None:
        return {}
    if getattr(config, "num_layers", None) or getattr(config, "num_hidden_layers", None):
        return {}
    return {
        "num_layers": sub.num_hidden_layers,
        "token_dim": sub.hidden_size,
        "num_attention_heads": sub.num_attention_heads,
    }


class PromptLearningMethod(PeftMethod):
    """Prefix and prompt tuning: trainable virtual tokens, nothing to fold into the weights."""

    mergeable = False
    markers = ("modules_to_save", "prompt_encoder")
    virtual_tokens = True
    group = "prompts"


class PrefixMethod(PromptLearningMethod):
    name = "prefix"
    config_class = PrefixOptions
    default_lr = 1e-2
    lr_source = (
        "Li & Liang 2021 use 5e-5..8e-5 with a reparameterisation MLP; raw prefixes want ~1e-2"
    )
    description = "trainable key/value prefixes in every attention layer (peft PrefixTuningConfig)"

    def unsupported_reason(self, family: Architecture, task_kind: str) -> str | None:
        if task_kind == "classification":
            return NO_CACHE_FOR_CLASSIFIERS
        return None

    def peft_config(self, model: Model, ctx: MethodContext) -> PeftConfig:
        from peft import PrefixTuningConfig

        cfg = ctx.config
        return PrefixTuningConfig(
            task_type=PEFT_TASK_TYPES[ctx.task_kind],
            num_virtual_tokens=cfg.num_virtual_tokens,
            prefix_projection=cfg.projection,
            modules_to_save=list(ctx.new_modules) or None,
            **prompt_dims(model),
        )


class PromptMethod(PromptLearningMethod):
    name = "prompt"
    config_class = PromptOptions
    default_lr = 3e-2
    lr_source = (
        "Lester et al. 2021 train soft prompts at 0.3 with Adafactor; 3e-2 is the AdamW equivalent"
    )
    description = "trainable soft tokens before the input (peft PromptTuningConfig)"

    def unsupported_reason(self, family: Architecture, task_kind: str) -> str | None:
        if task_kind == "classification" and family.shape == "encoder-decoder":
            return T5_CLS_NO_EMBEDS
        if task_kind == "classification" and family.shape == "decoder":
            return GPT2_CLS_POOLING
        return None

    def peft_config(self, model: Model, ctx: MethodContext) -> PeftConfig:
        from peft import PromptTuningConfig

        cfg = ctx.config
        init: dict[str, Any] = {"prompt_tuning_init": "RANDOM"}
        if cfg.init_text:
            init = {
                "prompt_tuning_init": "TEXT",
                "prompt_tuning_init_text": cfg.init_text,
                "tokenizer_name_or_path": _tokenizer_path(model),
            }
        return PromptTuningConfig(
            task_type=PEFT_TASK_TYPES[ctx.task_kind],
            num_virtual_tokens=cfg.num_virtual_tokens,
            modules_to_save=list(ctx.new_modules) or None,
            **init,
            **prompt_dims(model),
        )


def _tokenizer_path(model: Model) -> str:
    """Where the model was loaded from: its tokenizer initialises the prompt from text."""
    config = model.config
    path = getattr(config, "_name_or_path", "") or getattr(
        getattr(config, "encoder", None), "_name_or_path", ""
    )
    if not path:
        raise FinetuneError(
            "method.init_text: cannot find the tokenizer of this model to encode the text",
            fix="remove method.init_text (random initialisation)",
        )
    return str(path)
