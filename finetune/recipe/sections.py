"""The recipe's sections that no registry shapes: model, data, train, eval and output.

Every key is a typed pydantic field with a default and a one-line description. These classes
import nothing but pydantic and the data source schema, so tasks, the training loop and the
model loaders can read their own section's type without importing the whole recipe (whose
`task:` and `method:` unions are built from the registries, in schema.py).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal

from pydantic import Field, field_validator, model_validator

from finetune.data.sources import DataSource, coerce_source
from finetune.models import ARCHITECTURES
from finetune.recipe.section import Section

if TYPE_CHECKING:  # built at run time from the architecture table
    ModelType = str
else:
    ModelType = Literal[("auto",) + tuple(ARCHITECTURES)]


# --------------------------------------------------------------------------- model


class QuantizationConfig(Section):
    bits: Literal[4, 8] = Field(
        description="Load the frozen base in 4-bit NF4 (QLoRA) or 8-bit; LoRA-family methods, "
        "CUDA and bitsandbytes (the gpu extra) only."
    )


class ModelConfig(Section):
    name: str = Field(
        description="Hub id (gpt2), local directory, or bundled alias (bundled:minilm-l6).",
        min_length=1,
    )
    revision: str | None = Field(None, description="Hub branch, tag or commit to pin.")
    family: ModelType = Field(
        "auto",
        description="Architecture (a config.json model_type; bert, gpt2 and t5 name the three "
        "families); auto reads it from the model's config.json. `finetune models` lists them.",
    )
    quantization: QuantizationConfig | None = Field(
        None, description="k-bit base model (QLoRA); null: full-precision weights."
    )


# --------------------------------------------------------------------------- data


class DataConfig(Section):
    train: DataSource = Field(description="Training data: a local file or {hub, config, split}.")
    eval: DataSource | None = Field(None, description="Evaluation data (same forms as train).")
    test: DataSource | None = Field(None, description="Test data for `finetune eval --split test`.")
    eval_fraction: float | None = Field(
        None,
        gt=0,
        lt=1,
        description="Hold out this fraction of train as eval (seeded); instead of data.eval, "
        "never beside it (both set is refused).",
    )
    max_train_samples: int | None = Field(
        None,
        ge=1,
        description="Use at most N training rows: a local file's first N (streamed), a seeded "
        "random sample of a Hub split.",
    )
    max_eval_samples: int | None = Field(
        None, ge=1, description="Use at most N eval rows (chosen as for max_train_samples)."
    )
    cache: bool = Field(
        True,
        description="Keep tokenised splits in the feature cache (`FINETUNE_CACHE_DIR`, default "
        "`~/.cache/finetune`), so reruns, `--resume`, `eval`, `compare` and `sweep` tokenise once.",
    )

    @field_validator("train", "eval", "test", mode="before")
    @classmethod
    def _shorthand(cls, value: object) -> object:  # raw input: what YAML held
        return coerce_source(value)


# --------------------------------------------------------------------------- train / eval / output

# Accelerate's built-in trackers (`accelerate.tracking.LOGGER_TYPE_TO_CLASS`; a test keeps the
# two equal). Spelled out here because importing accelerate would import torch.
TrackerName = Literal[
    "tensorboard", "mlflow", "wandb", "comet_ml", "aim", "clearml", "dvclive", "swanlab", "trackio"
]


# The method's default_lr is AdamW's. LoRA+ moves B at 16x the rate, and LoRA-FA trains B
# alone through a projected gradient, so each wants another base rate: on 3,000 quick-start
# rows (SST-2 dev, benchmarks/results/lr_grid_optimizers_3000rows.md) LoRA+ diverged at
# LoRA's 2e-3 (0.51) and peaked at 1e-3 (0.811); LoRA-FA climbed to 3.2e-2 (0.795, 0.714 at
# 2e-3) and diverged at 6.4e-2.
OPTIMIZER_RATE_FACTORS = {"adamw": 1.0, "loraplus": 0.5, "lorafa": 16.0}


class TrainConfig(Section):
    epochs: int = Field(1, ge=1, le=1000, description="Passes over the training data.")
    max_steps: int | None = Field(
        None, ge=1, description="Stop after this many optimizer steps (overrides epochs)."
    )
    batch_size: int = Field(32, ge=1, le=65536, description="Examples per device per step.")
    grad_accum: int = Field(1, ge=1, le=1024, description="Micro-batches per optimizer step.")
    lr: float | None = Field(
        None,
        gt=0,
        le=1,
        description="Peak learning rate (AdamW); null = the method's default_lr "
        "(README, Learning rates).",
    )
    new_modules_lr: float | None = Field(
        None,
        gt=0,
        le=1,
        description="Peak rate of newly initialised modules (classification heads, bert2bert "
        "cross-attention); null: max(train.lr, 3e-3).",
    )
    optimizer: Literal["adamw", "loraplus", "lorafa"] = Field(
        "adamw",
        description="adamw; loraplus: LoRA's B matrices at lr x loraplus_lr_ratio (LoRA+); "
        "lorafa: A frozen, B's gradient projected (LoRA-FA). loraplus/lorafa: LoRA-family only; "
        "with train.lr null their rate is the method's default_lr x "
        f"{OPTIMIZER_RATE_FACTORS['loraplus']:g} (loraplus) or x "
        f"{OPTIMIZER_RATE_FACTORS['lorafa']:g} (lorafa).",
    )
    loraplus_lr_ratio: float = Field(
        16.0, ge=1, le=1024, description="loraplus: the B matrices' rate over train.lr."
    )
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
        "auto",
        description="auto: bf16 where the hardware computes it natively (GPUs with bf16, CPUs "
        "with AVX512-BF16/AMX), fp32 elsewhere; fp16 on T5 warns (overflows).",
    )
    compile: bool | Literal["auto"] = Field(
        "auto",
        description="torch.compile the transformer blocks for training, with the compiled code "
        "cached for later runs; auto: on a GPU when it pays back within the run (cached graphs, "
        "or enough steps), never on a CPU (measured no faster there).",
    )
    cuda_graphs: bool = Field(
        False,
        description="Compile the whole training forward instead of its blocks, with CUDA "
        "graphs on a GPU (torch.compile mode reduce-overhead): batches are padded up to a few "
        "length buckets (16, 32, 64, ... up to max_length), so a step replays a recorded graph "
        "instead of launching thousands of kernels (bert-base LoRA on an H200: 5.2x the "
        "Trainer). Classification and regression in one "
        "process without grad_accum; other runs compile their blocks. Needs train.compile "
        "true or auto (auto then compiles).",
    )
    gradient_checkpointing: bool | Literal["auto"] = Field(
        "auto",
        description="Recompute each block's activations in the backward pass: less memory, "
        "about 15-30% slower. auto: on for decoder summarization/translation (long prompt + "
        "target sequences through every layer), off otherwise.",
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
    select_best: bool | None = Field(
        None,
        description="Keep the weights of the best evaluation as the run's adapter/model; "
        "null: on when there is eval data.",
    )
    best_metric: str = Field(
        "auto",
        min_length=1,
        description="Eval metric that picks the best weights and drives early stopping; auto: "
        "the task's main metric, or eval loss where training evals compute loss only.",
    )
    best_mode: Literal["auto", "max", "min"] = Field(
        "auto", description="Whether higher or lower best_metric is better; auto: min for a loss."
    )
    early_stopping_patience: int | None = Field(
        None, ge=1, description="Stop after N evaluations without improvement; null: never."
    )
    early_stopping_min_delta: float = Field(
        0.0, ge=0, description="Smallest change of best_metric that counts as an improvement."
    )
    report_to: list[TrackerName] = Field(
        [],
        description="Experiment trackers through Accelerate (tensorboard, mlflow, wandb, ...); "
        "files under <run>/trackers.",
    )

    @field_validator("report_to", mode="before")
    @classmethod
    def _one_or_comma_list(cls, value: object) -> object:
        """`train.report_to=tensorboard` or `=tensorboard,mlflow` on the command line."""
        if isinstance(value, str):
            return [part.strip() for part in value.split(",") if part.strip()]
        return value

    @model_validator(mode="after")
    def _graphs_need_compile(self) -> TrainConfig:
        if self.cuda_graphs and self.compile is False:
            raise ValueError(
                "train.cuda_graphs: true compiles the training forward, but train.compile is "
                "false: set train.compile to true or auto, or train.cuda_graphs to false"
            )
        return self


class DecodingConfig(Section):
    max_new_tokens: int | None = Field(
        None,
        ge=1,
        le=4096,
        description="Tokens to generate at most; default (null): train.max_target_length.",
    )
    num_beams: int = Field(1, ge=1, le=64, description="Beam width (1: greedy).")
    length_penalty: float = Field(1.0, description="Beam-search length penalty.")
    no_repeat_ngram_size: int = Field(0, ge=0, description="Forbid repeating n-grams (0: off).")
    batch_size: int | None = Field(None, ge=1, description="Generation batch; default eval size.")


class EvalConfig(Section):
    batch_size: int = Field(64, ge=1, le=65536, description="Examples per device per eval step.")
    generate_during_training: bool = Field(
        False,
        description="Generation tasks: compute ROUGE/BLEU at every eval (slow) instead of loss.",
    )
    generation: DecodingConfig = Field(
        default_factory=DecodingConfig, description="Decoding settings for generation tasks."
    )
    metrics: list[str] = Field(
        default_factory=list,
        description="Extra metrics loaded with evaluate.load: a local metric directory "
        "(offline) or a Hub metric name; computed on the same predictions.",
    )


class OutputConfig(Section):
    dir: str | None = Field(None, description="Run directory; default runs/<recipe file name>.")


def default_lr(method_rate: float, optimizer: object) -> float:
    """The rate an unset `train.lr` resolves to: the method's default, scaled for the optimizer."""
    factor = OPTIMIZER_RATE_FACTORS.get(optimizer if isinstance(optimizer, str) else "adamw", 1.0)
    return float(f"{method_rate * factor:.3g}")
