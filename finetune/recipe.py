"""The recipe schema: the single source of truth for every option.

Every key is a typed pydantic field with a default and a one-line description. The README option
tables and `finetune validate` read these models; nothing else restates them. Importing this
module must stay cheap (no torch, no transformers): the CLI loads it for `--help` and `validate`.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal, Union

from pydantic import BaseModel, ConfigDict, Discriminator, Field, Tag, field_validator

TASK_TYPES = ("classification", "summarization", "translation")
FAMILY_NAMES = ("bert", "gpt2", "t5")


class Section(BaseModel):
    """Base of every recipe section: unknown keys are errors, never silently ignored."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)


# --------------------------------------------------------------------------- model


class ModelSection(Section):
    name: str = Field(
        description="Hub id (gpt2), local directory, or bundled alias (bundled:minilm-l6).",
        min_length=1,
    )
    revision: str | None = Field(None, description="Hub branch, tag or commit to pin.")
    family: Literal["auto", "bert", "gpt2", "t5"] = Field(
        "auto", description="Model family; auto reads it from the model config."
    )


# --------------------------------------------------------------------------- task


class ClassificationTask(Section):
    type: Literal["classification"] = Field(description="Task kind.")
    text: str = Field("text", description="Column with the input text.")
    text_pair: str | None = Field(None, description="Optional second text column (pairs).")
    label: str = Field("label", description="Column with the label (int or string).")


class SummarizationTask(Section):
    type: Literal["summarization"] = Field(description="Task kind.")
    text: str = Field("text", description="Column with the document to summarise.")
    summary: str | list[str] = Field(
        "summary",
        description="Reference column; a list column or several columns give several references.",
    )
    prefix: str | None = Field(
        None, description="Text put before every input; default 'summarize: ' for T5, none else."
    )


class TranslationTask(Section):
    type: Literal["translation"] = Field(description="Task kind.")
    source_lang: str = Field("en", description="Source language code (column name by default).")
    target_lang: str = Field("de", description="Target language code (column name by default).")
    source: str | None = Field(None, description="Source column; default source_lang.")
    target: str | None = Field(None, description="Target column; default target_lang.")
    translation_column: str | None = Field(
        None, description="Column holding {lang: text} dicts (Hub WMT/Multi30k layout)."
    )
    prefix: str | None = Field(
        None,
        description="Text put before every input; default 'translate English to German: ' "
        "style for T5, none else.",
    )


TaskSection = Annotated[
    Union[ClassificationTask, SummarizationTask, TranslationTask],
    Field(discriminator="type"),
]


# --------------------------------------------------------------------------- data


class LocalSource(Section):
    path: str = Field(
        description="csv/tsv/jsonl/json/parquet file, or 'train.{lang}' for aligned text files.",
        min_length=1,
    )
    format: Literal["auto", "csv", "tsv", "jsonl", "json", "parquet", "text"] = Field(
        "auto", description="File format; auto uses the extension."
    )
    quoting: Literal["rfc4180", "none"] = Field(
        "rfc4180",
        description="csv/tsv quotes: rfc4180 reads quoted fields as pandas writes them and "
        "refuses a stray quote; none keeps every quote as text (GLUE-style files).",
    )


class HubSource(Section):
    hub: str = Field(description="Hub dataset id, e.g. glue.", min_length=1)
    config: str | None = Field(None, description="Dataset configuration, e.g. sst2.")
    split: str = Field("train", description="Split to read, e.g. train or validation.")
    revision: str | None = Field(None, description="Dataset revision to pin.")


def _source_tag(value: Any) -> str:
    if isinstance(value, dict):
        return "hub" if "hub" in value else "local"
    if isinstance(value, HubSource):
        return "hub"
    return "local"


def _coerce_source(value: Any) -> Any:
    """A bare string is shorthand for {path: ...}."""
    return {"path": value} if isinstance(value, str) else value


DataSource = Annotated[
    Union[Annotated[LocalSource, Tag("local")], Annotated[HubSource, Tag("hub")]],
    Discriminator(_source_tag),
]


class DataSection(Section):
    train: DataSource = Field(description="Training data: a local file or {hub, config, split}.")
    eval: DataSource | None = Field(None, description="Evaluation data (same forms as train).")
    test: DataSource | None = Field(None, description="Test data for `finetune eval --split test`.")
    eval_fraction: float | None = Field(
        None,
        gt=0,
        lt=1,
        description="Hold out this fraction of train as eval (seeded) when eval is not given.",
    )
    max_train_samples: int | None = Field(None, ge=1, description="Use at most N training rows.")
    max_eval_samples: int | None = Field(None, ge=1, description="Use at most N eval rows.")

    @field_validator("train", "eval", "test", mode="before")
    @classmethod
    def _shorthand(cls, value: Any) -> Any:
        return _coerce_source(value)


# --------------------------------------------------------------------------- methods


TargetModules = Union[Literal["auto", "all-linear"], list[str]]


class FullMethod(Section):
    name: Literal["full"] = Field(description="Method: every weight trains.")


class LoraMethod(Section):
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


class IA3Method(Section):
    name: Literal["ia3"] = Field(description="Method: (IA)^3 learned rescaling vectors.")
    target_modules: TargetModules = Field("auto", description="Modules to rescale.")
    feedforward_modules: Union[Literal["auto"], list[str]] = Field(
        "auto", description="Which targets are feed-forward (scaled on the input)."
    )


class PrefixMethod(Section):
    name: Literal["prefix"] = Field(description="Method: prefix tuning (virtual key/values).")
    num_virtual_tokens: int = Field(20, ge=1, le=512, description="Prefix length.")
    projection: bool = Field(False, description="Reparameterise the prefix through an MLP.")


class PromptMethod(Section):
    name: Literal["prompt"] = Field(description="Method: prompt tuning (soft input tokens).")
    num_virtual_tokens: int = Field(20, ge=1, le=512, description="Soft prompt length.")
    init_text: str | None = Field(None, description="Initialise the prompt from this text.")


class BottleneckMethod(Section):
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


class BitFitMethod(Section):
    name: Literal["bitfit"] = Field(description="Method: only bias terms (and the head) train.")


MethodSection = Annotated[
    Union[
        FullMethod,
        LoraMethod,
        IA3Method,
        PrefixMethod,
        PromptMethod,
        BottleneckMethod,
        BitFitMethod,
    ],
    Field(discriminator="name"),
]

METHOD_NAMES = (
    "full",
    "lora",
    "dora",
    "rslora",
    "ia3",
    "prefix",
    "prompt",
    "houlsby",
    "pfeiffer",
    "bitfit",
)


# --------------------------------------------------------------------------- train / eval / output


class TrainSection(Section):
    epochs: int = Field(1, ge=1, le=1000, description="Passes over the training data.")
    max_steps: int | None = Field(
        None, ge=1, description="Stop after this many optimizer steps (overrides epochs)."
    )
    batch_size: int = Field(32, ge=1, le=65536, description="Examples per device per step.")
    grad_accum: int = Field(1, ge=1, le=1024, description="Micro-batches per optimizer step.")
    lr: float = Field(5e-4, gt=0, le=1, description="Peak learning rate (AdamW).")
    weight_decay: float = Field(0.0, ge=0, le=1, description="AdamW weight decay.")
    warmup_fraction: float = Field(
        0.06, ge=0, lt=1, description="Fraction of steps for linear warm-up."
    )
    scheduler: Literal["linear", "cosine", "constant"] = Field(
        "linear", description="Learning-rate schedule after warm-up."
    )
    max_grad_norm: float | None = Field(1.0, gt=0, description="Gradient clipping; null: off.")
    max_length: int = Field(128, ge=8, le=65536, description="Input tokens; longer is truncated.")
    max_target_length: int = Field(
        128, ge=1, le=65536, description="Target tokens for generation tasks."
    )
    seed: int = Field(42, ge=0, description="Seed for weights init, shuffling and dropout.")
    precision: Literal["auto", "fp32", "bf16", "fp16"] = Field(
        "auto", description="auto: fp32 on CPU, bf16 where the GPU has it, else fp16."
    )
    group_by_length: bool = Field(
        True, description="Batch similar lengths together (less padding, faster)."
    )
    logging_steps: int = Field(10, ge=1, description="Write log.jsonl every N optimizer steps.")
    eval_steps: int | None = Field(
        None, ge=1, description="Also evaluate every N optimizer steps (always after each epoch)."
    )
    save_steps: int | None = Field(
        None, ge=1, description="Checkpoint every N optimizer steps (always after each epoch)."
    )
    keep_checkpoints: int = Field(1, ge=1, description="Keep only the newest N checkpoints.")


class GenerationSection(Section):
    max_new_tokens: int = Field(64, ge=1, le=4096, description="Tokens to generate at most.")
    num_beams: int = Field(1, ge=1, le=64, description="Beam width (1: greedy).")
    length_penalty: float = Field(1.0, description="Beam-search length penalty.")
    no_repeat_ngram_size: int = Field(0, ge=0, description="Forbid repeating n-grams (0: off).")
    batch_size: int | None = Field(None, ge=1, description="Generation batch; default eval size.")


class EvalSection(Section):
    batch_size: int = Field(64, ge=1, le=65536, description="Examples per device per eval step.")
    generate_during_training: bool = Field(
        False,
        description="Generation tasks: compute ROUGE/BLEU at every eval (slow) instead of loss.",
    )
    generation: GenerationSection = Field(
        default_factory=GenerationSection, description="Decoding settings for generation tasks."
    )


class OutputSection(Section):
    dir: str | None = Field(None, description="Run directory; default runs/<recipe file name>.")


class Recipe(Section):
    """A whole recipe: one YAML file."""

    model: ModelSection = Field(description="Which pretrained model to start from.")
    task: TaskSection = Field(description="What to learn and which columns hold it.")
    data: DataSection = Field(description="Where the examples come from.")
    method: MethodSection = Field(description="How the model is adapted.")
    train: TrainSection = Field(default_factory=TrainSection, description="Optimisation.")
    eval: EvalSection = Field(default_factory=EvalSection, description="Evaluation.")
    output: OutputSection = Field(default_factory=OutputSection, description="Where to write.")


SECTIONS: dict[str, Any] = {
    "model": ModelSection,
    "task": TaskSection,
    "data": DataSection,
    "method": MethodSection,
    "train": TrainSection,
    "eval": EvalSection,
    "output": OutputSection,
}
