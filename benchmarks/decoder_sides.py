"""The two sides of the decoder benchmarks: `finetune` and `transformers.Trainer` + peft on
SmolLM2-135M-Instruct, each measurement in a fresh process that reports its own peak RSS.

Shared by benchmarks/decoder_memory.py and benchmarks/decoder_throughput.py (not a benchmark on
its own). Both sides train on exactly the same token ids: the Trainer is fed our task's
`encode` output (summarisation: `[BOS] dialogue \\n summary <EOS>` with the prompt labelled -100;
classification: the SST-2 sentence), with the same LoRA (r 8, alpha 16, dropout 0.05 on
q_proj/v_proj), lr, warm-up, batch, length grouping (`group_by_length` for the Trainer), steps
and seed, and the same precision (fp32, or bf16 autocast: `bf16=True` for the Trainer).
Evaluation: ours is `finetune eval`'s path on a saved run (loss + greedy generation, one prompt
pass shared by both); the Trainer's is `Trainer.evaluate` (loss) + `Seq2SeqTrainer.predict`
(generation from left-padded prompts), the two calls a Trainer user makes.
"""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
SHARED = REPO.parent / "shared" / "data"
sys.path.insert(0, str(HERE))

from smollm2_dir import smollm2_dir  # noqa: E402

SETUPS: dict[str, dict[str, Any]] = {
    "summarization": {
        "task": {"type": "summarization", "text": "dialogue", "summary": "summary"},
        "data": str(SHARED / "dialogsum" / "dev.jsonl"),
        "batch_size": 8,
        "max_length": 384,
        "max_target_length": 64,
    },
    "classification": {
        "task": {"type": "classification", "text": "text", "label": "label"},
        "data": str(SHARED / "sst2" / "train.tsv"),
        "batch_size": 16,
        "max_length": 48,
        "max_target_length": 64,
    },
}
LORA = {"name": "lora", "r": 8, "alpha": 16, "dropout": 0.05}
LR, WARMUP, SEED = 2e-4, 0.06, 42


def peak_rss_mb() -> float:
    """This process's peak resident set so far (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def rss_mb() -> float:
    pages = int(Path("/proc/self/statm").read_text().split()[1])
    return pages * os.sysconf("SC_PAGE_SIZE") / 2**20


def recipe(spec: dict[str, Any], out: Path) -> dict[str, Any]:
    """Our recipe for one measurement (`spec`: setup, precision, rows, steps, eval_batch)."""
    setup = SETUPS[spec["setup"]]
    return {
        "model": {"name": str(smollm2_dir())},
        "task": setup["task"],
        "data": {"train": setup["data"], "max_train_samples": spec["rows"], "cache": False},
        "method": LORA,
        "train": {
            "epochs": 1000,
            "max_steps": spec["steps"],
            "batch_size": setup["batch_size"],
            "lr": LR,
            "warmup_fraction": WARMUP,
            "max_length": setup["max_length"],
            "max_target_length": setup["max_target_length"],
            "seed": SEED,
            "precision": spec["precision"],
            "logging_steps": 1,
            "gradient_checkpointing": bool(spec.get("checkpointing")),
        },
        "eval": {"batch_size": spec.get("eval_batch") or 64},
        "output": {"dir": str(out)},
    }


def train_ours(spec: dict[str, Any], out: Path) -> dict[str, Any]:
    """`finetune run` (train only: no eval split) in this process; the run stays in `out`."""
    from finetune.commands.run import run

    path = out.with_suffix(".yaml")
    path.write_text(yaml.safe_dump(recipe(spec, out)))
    summary = run(path, progress=False)
    log = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    return {
        "samples_per_s": summary.metrics["train_samples_per_s"],
        "train_seconds": summary.metrics["train_seconds"],
        "losses": [r["loss"] for r in log if "loss" in r],
    }


def our_task(spec: dict[str, Any], training: bool, data: str | None = None) -> tuple[Any, list]:
    """Our task (tokenizer attached) and the features it encodes for the rows."""
    from finetune.models.loading import load_tokenizer
    from finetune.recipe.schema import Recipe
    from finetune.setup.architecture import recipe_architecture
    from finetune.setup.data import load_splits
    from finetune.setup.task import make_task

    raw = recipe(spec, Path(tempfile.gettempdir()))
    if data:
        raw["data"] = {"train": data, "cache": False}
    cfg = Recipe.model_validate(raw)
    task = make_task(cfg, recipe_architecture(cfg))
    task.tokenizer = load_tokenizer(cfg.model.name)
    splits = load_splits(task, cfg, REPO, stream_train=False)
    return task, task.encode(splits.train, training=training)


def peft_model(task: Any, classification: bool) -> Any:
    """The base model + peft LoRA, configured as our recipe configures it."""
    import torch
    from peft import LoraConfig, TaskType, get_peft_model
    from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification

    torch.manual_seed(SEED)
    if classification:
        model = AutoModelForSequenceClassification.from_pretrained(
            smollm2_dir(), num_labels=2, dtype=torch.float32
        )
        model.config.pad_token_id = task.tokenizer.pad_token_id
    else:
        model = AutoModelForCausalLM.from_pretrained(smollm2_dir(), dtype=torch.float32)
    lora = LoraConfig(
        task_type=TaskType.SEQ_CLS if classification else TaskType.CAUSAL_LM,
        r=LORA["r"],
        lora_alpha=LORA["alpha"],
        lora_dropout=LORA["dropout"],
        target_modules=["q_proj", "v_proj"],
        modules_to_save=["score"] if classification else None,
    )
    return get_peft_model(model, lora)


def train_trainer(spec: dict[str, Any], out: Path) -> dict[str, Any]:
    """Trainer + peft on our features, configured like our run."""
    import datasets
    from transformers import (
        DataCollatorForSeq2Seq,
        DataCollatorWithPadding,
        Trainer,
        TrainingArguments,
    )

    classification = spec["setup"] == "classification"
    task, features = our_task(spec, training=True)
    model = peft_model(task, classification)
    rows = [{"input_ids": f["input_ids"], "labels": f["labels"]} for f in features]
    collator: Any = (
        DataCollatorWithPadding(task.tokenizer)
        if classification
        else DataCollatorForSeq2Seq(task.tokenizer, label_pad_token_id=-100)
    )
    args = TrainingArguments(
        output_dir=str(out),
        per_device_train_batch_size=SETUPS[spec["setup"]]["batch_size"],
        learning_rate=LR,
        max_steps=spec["steps"],
        warmup_steps=WARMUP,
        lr_scheduler_type="linear",
        weight_decay=0.0,
        max_grad_norm=1.0,
        seed=SEED,
        use_cpu=True,
        bf16=spec["precision"] == "bf16",
        gradient_checkpointing=bool(spec.get("checkpointing")),
        train_sampling_strategy="group_by_length",
        report_to=[],
        save_strategy="no",
        eval_strategy="no",
        logging_steps=1,
        dataloader_num_workers=0,
        disable_tqdm=True,
    )
    trainer = Trainer(
        model=model,
        args=args,
        train_dataset=datasets.Dataset.from_list(rows),
        data_collator=collator,
        processing_class=task.tokenizer,
    )
    result = trainer.train()
    return {
        "samples_per_s": round(result.metrics["train_samples_per_second"], 2),
        "train_seconds": round(result.metrics["train_runtime"], 2),
        "losses": [r["loss"] for r in trainer.state.log_history if "loss" in r],
    }


def eval_ours(spec: dict[str, Any], run_dir: Path) -> dict[str, Any]:
    """`finetune eval RUN --data FILE`'s path, at the eval batch of `spec`."""
    from finetune.data.encoding import encode_features
    from finetune.setup.accelerator import inference_accelerator
    from finetune.setup.data import saved_split
    from finetune.setup.run_setup import RunSetup
    from finetune.train.evaluation import make_eval_loader, run_eval

    run = RunSetup.from_run_dir(run_dir)
    examples = saved_split(run.task, run.recipe, "eval", spec["eval_data"])
    dataset = encode_features(run.task, examples, training=False, cache=False)
    accelerator = inference_accelerator(run.recipe)
    model = accelerator.prepare_model(run.model, evaluation_mode=True)
    loader = make_eval_loader(dataset, run.task, spec["eval_batch"], accelerator)
    started = time.perf_counter()
    metrics, _ = run_eval(model, run.task, loader, examples, accelerator)
    return {"eval_loss": metrics["loss"], "eval_seconds": time.perf_counter() - started}


def eval_trainer(spec: dict[str, Any], out: Path) -> dict[str, Any]:
    """Trainer.evaluate (loss over prompt + target) + Seq2SeqTrainer.predict (left-padded
    prompts, the same generation settings as ours)."""
    import copy

    import datasets
    from transformers import (
        DataCollatorForSeq2Seq,
        DataCollatorWithPadding,
        Seq2SeqTrainer,
        Seq2SeqTrainingArguments,
    )

    task, features = our_task(spec, training=False, data=spec["eval_data"])
    model = peft_model(task, classification=False).eval()
    model.generation_config = task.generation_config(model)
    left = copy.deepcopy(task.tokenizer)
    left.padding_side = "left"

    def arguments(generate: bool) -> Any:
        return Seq2SeqTrainingArguments(
            output_dir=str(out),
            per_device_eval_batch_size=spec["eval_batch"],
            predict_with_generate=generate,
            use_cpu=True,
            bf16=spec["precision"] == "bf16",
            report_to=[],
            disable_tqdm=True,
            dataloader_num_workers=0,
        )

    full = [{"input_ids": f["input_ids"], "labels": f["labels"]} for f in features]
    prompts = [{"input_ids": f["prompt_ids"]} for f in features]
    loss_trainer = Seq2SeqTrainer(
        model=model,
        args=arguments(False),
        data_collator=DataCollatorForSeq2Seq(task.tokenizer, label_pad_token_id=-100),
    )
    generating = Seq2SeqTrainer(
        model=model,
        args=arguments(True),
        data_collator=DataCollatorWithPadding(left),
        processing_class=left,
    )
    started = time.perf_counter()
    metrics = loss_trainer.evaluate(datasets.Dataset.from_list(full))
    generating.predict(datasets.Dataset.from_list(prompts))
    return {"eval_loss": metrics["eval_loss"], "eval_seconds": time.perf_counter() - started}


def child_main(spec: dict[str, Any]) -> None:
    """One measurement in this fresh process; prints its JSON line last."""
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="finetune-decoder-bench-") as tmp:
        out = Path(spec.get("run_dir") or Path(tmp) / "run")
        kind = (spec["side"], spec.get("phase", "train"))
        if kind == ("ours", "train"):
            row = train_ours(spec, out)
        elif kind == ("trainer", "train"):
            row = train_trainer(spec, out)
        elif kind == ("ours", "eval"):
            row = eval_ours(spec, out)
        else:
            row = eval_trainer(spec, out)
    row.update(
        spec, peak_rss_mb=round(peak_rss_mb(), 1), wall_s=round(time.perf_counter() - started, 1)
    )
    print(json.dumps(row), flush=True)


def in_child(script: str, **spec: Any) -> dict[str, Any]:
    """Run `script --child SPEC_JSON` in a fresh process and return its JSON line."""
    cmd = [sys.executable, script, "--child", json.dumps(spec)]
    env = {**os.environ, "PYTHONPATH": str(REPO), "TOKENIZERS_PARALLELISM": "false"}
    done = subprocess.run(cmd, capture_output=True, text=True, check=False, env=env)
    if done.returncode != 0:
        raise SystemExit(f"{spec} failed:\n{done.stderr[-4000:]}")
    row = json.loads(done.stdout.strip().splitlines()[-1])
    print(json.dumps(row), flush=True)
    return row


def weights_mb() -> float:
    """The model's fp32 weights (the safetensors file: 134.5M parameters)."""
    return sum(f.stat().st_size for f in smollm2_dir().glob("*.safetensors")) / 2**20


def machine_line() -> str:
    """CPU model, cores, bf16 flags and the load average, for every result file."""
    import platform

    info = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else ""
    model = next((ln.split(":", 1)[1].strip() for ln in info.splitlines()
                  if ln.startswith("model name")), platform.processor())  # fmt: skip
    flags = [f for f in ("avx2", "avx512f", "avx512_bf16", "amx_bf16") if f in info.split()]
    load = " ".join(f"{x:.2f}" for x in os.getloadavg())
    return (
        f"{model}, {os.cpu_count()} cores, flags: {' '.join(flags)}; load average {load} "
        "(other jobs shared these cores)"
    )
