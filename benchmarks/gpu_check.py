"""One command that proves the GPU path (issue #16): run it on a machine with one CUDA GPU.

    python benchmarks/gpu_check.py                 # on a GPU: < 8 minutes on an H100
    python benchmarks/gpu_check.py --out table.md --budget 400   # table rewritten per check
    python benchmarks/gpu_check.py --device cpu    # dry mode: tiny sizes, a minute on a CPU

What it runs, each a few optimizer steps in bf16 (the GPU) or fp32 (the dry mode):

1. every family x {lora, houlsby, full} x {classification, translation} (bert's translation is
   bert2bert), each run directory reloaded by `finetune eval` to the metrics the run reported;
   the LoRA cells also predict (on the GPU) and merge (with the merge's parity check);
2. gradient checkpointing on and off (bert-base, LoRA): the same loss, the peak memory of each;
   fp16 with the gradient scaler, and `precision: auto` resolving to bf16 on this GPU;
3. QLoRA 4-bit on a gpt2-size model (needs bitsandbytes: skipped with the reason without it);
4. FSDP with one process through `accelerate launch --config_file recipes/accelerate/fsdp.yaml`
   (wrapping and saving; the adapter reloads with `finetune eval`);
5. peak memory LoRA / full fine-tuning on bert-base, above the loaded weights (goal <= 0.6);
6. training throughput, ours / transformers.Trainer + peft with its best settings (bf16,
   group_by_length), same model, rows, batch, LoRA targets and steps, lengths varying as in
   real text, each side's steady rate after its warm-up and its model FLOPs utilisation (MFU):
   bert-base classification (goal >= 2x on an H100/H200) and a SmolLM2-135M-size random
   Llama classifier (`decoder`, goal >= 1.5x). Ours three ways: eager, `train.compile: true`
   (the blocks compiled) and `train.cuda_graphs: true` (the whole forward compiled with
   `mode="reduce-overhead"`, batches padded to 16/32/64-token buckets: a step replays a few
   CUDA graphs instead of launching thousands of kernels; finetune/train/graphs.py);
7. decoders: padding-free packed batches (benchmarks/packing.py: one row per batch,
   position_ids restarting per sequence, no attention_mask, as DataCollatorWithFlattening)
   against right-padded ones: per-sequence losses equal (max |diff| in fp32, and bf16 on the
   GPU; a row whose positions do not restart must differ), then LoRA r8 training steps both
   ways on a SmolLM2-135M-size random Llama (tiny in the dry mode): samples/s, tokens/s and
   packed/padded.

Models are random-initialised from configs of real sizes (bert-base, gpt2, t5-small) with
tokenizers built here: the machine needs no Hub. Needed there beyond torch, transformers, peft
and accelerate: pydantic (+ pydantic_core, annotated_types, typing_inspection), typer, rich,
PyYAML, safetensors, scikit-learn and sacrebleu (the translation metric) - carry their wheels
when the image lacks them; `--check-imports` lists what is missing. Not needed: datasets,
rouge_score, the Hub, the bundled MiniLM. Results: a markdown table on stdout and, on a GPU,
in benchmarks/results/gpu_<device>_<date>.md (the device name and date in the file).
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import importlib.util
import json
import os
import platform
import random
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
RESULTS = REPO / "benchmarks" / "results"
NEEDED = ["torch", "transformers", "peft", "accelerate", "pydantic", "typer", "rich", "yaml",
          "safetensors", "sklearn", "sacrebleu"]  # fmt: skip
FAMILIES = ("bert", "gpt2", "t5")
METHODS = {
    "lora": {"name": "lora", "r": 8},
    "houlsby": {"name": "houlsby"},
    "full": {"name": "full"},
}
# real sizes (the published configs) and the dry mode's tiny ones
REAL = {
    "bert": {"hidden_size": 768, "num_hidden_layers": 12, "num_attention_heads": 12,
             "intermediate_size": 3072, "vocab_size": 30522},
    "gpt2": {"n_embd": 768, "n_layer": 12, "n_head": 12, "vocab_size": 50257},
    "t5": {"d_model": 512, "d_ff": 2048, "d_kv": 64, "num_layers": 6, "num_heads": 8,
           "vocab_size": 32128},
    "llama": {"hidden_size": 576, "num_hidden_layers": 30, "num_attention_heads": 9,
              "num_key_value_heads": 3, "intermediate_size": 1536, "vocab_size": 49152,
              "tie_word_embeddings": True},  # SmolLM2-135M's published config
}  # fmt: skip
TINY = {
    "bert": {"hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2,
             "intermediate_size": 64},
    "gpt2": {"n_embd": 32, "n_layer": 2, "n_head": 2},
    "t5": {"d_model": 32, "d_ff": 64, "d_kv": 16, "num_layers": 2, "num_heads": 2},
    "llama": {"hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 4,
              "num_key_value_heads": 2, "intermediate_size": 64},
}  # fmt: skip
# matmul weights a token passes through (embeddings and heads left out), for MFU
MATMUL_PARAMS = {
    "bert": 12 * (4 * 768**2 + 2 * 768 * 3072),
    "llama": 30 * (2 * 576**2 + 2 * 576 * 192 + 3 * 576 * 1536),
}


@dataclass
class Check:
    name: str
    ok: bool
    detail: str
    numbers: dict[str, Any] = field(default_factory=dict)


@dataclass
class Setup:
    gpu: bool
    work: Path
    steps: int
    batch: int
    models: dict[str, Path] = field(default_factory=dict)
    data: dict[str, Path] = field(default_factory=dict)
    cells: list[str] = field(default_factory=list)  # matrix cells to run; empty: all
    checks: list[Check] = field(default_factory=list)
    out: Path | None = None  # the table is rewritten here after every check (a run cut off
    started: float = field(default_factory=time.perf_counter)  # at its limit keeps what it did)
    deadline: float = float("inf")  # perf_counter time after which no further check starts
    profile: bool = False  # throughput: cProfile both sides (files beside the table)
    notes: dict[str, str] = field(default_factory=dict)  # a side's compile facts, for its row
    sides: list[str] = field(default_factory=list)  # throughput sides to run; empty: all

    def record(self, check: Check) -> None:
        self.checks.append(check)
        mark = "ok " if check.ok else "FAIL"
        print(f"[{mark}] {check.name}: {check.detail}", flush=True)
        if self.out is not None:
            self.out.write_text(report(self, time.perf_counter() - self.started))

    def time_left(self) -> bool:
        return time.perf_counter() < self.deadline


# --------------------------------------------------------------------------- models and data


def build_model(family: str, path: Path, real: bool) -> Path:
    """A random-initialised model of real (or tiny) size with a word-level tokenizer from
    tests/tiny_models.py; its vocabulary is padded to the real size so embeddings weigh what
    they weigh in the published model."""
    from transformers import AutoConfig, AutoModel, AutoModelForCausalLM, AutoModelForSeq2SeqLM

    from tests.tiny_archs import ARCH_BUILDERS
    from tests.tiny_models import BUILDERS

    {**ARCH_BUILDERS, **BUILDERS}[family](path)  # tokenizer + tiny model; replaced below
    config = AutoConfig.from_pretrained(path)
    sizes = dict((REAL if real else TINY)[family])
    sizes["vocab_size"] = max(sizes.get("vocab_size", 0), config.vocab_size)
    for key, value in sizes.items():
        setattr(config, key, value)
    auto = {"bert": AutoModel, "gpt2": AutoModelForCausalLM, "llama": AutoModelForCausalLM,
            "t5": AutoModelForSeq2SeqLM}[family]  # fmt: skip
    model = auto.from_config(config)
    model.save_pretrained(path)
    return path


def sentence_rows(n: int, seed: int) -> list[dict]:
    """Sentiment rows of 3 to 60 words: lengths vary as in real text, so batching matters."""
    from tests.tiny_models import FILLER, NEGATIVE, POSITIVE

    rng = random.Random(seed)
    rows = []
    for _ in range(n):
        label = rng.randint(0, 1)
        words = [rng.choice(FILLER) for _ in range(int(rng.lognormvariate(2.5, 0.6)) % 58 + 2)]
        words.insert(rng.randrange(len(words) + 1), rng.choice(POSITIVE if label else NEGATIVE))
        rows.append({"text": " ".join(words), "label": label})
    return rows


def write_data(work: Path) -> dict[str, Path]:
    from tests.conftest import write_csv
    from tests.generation_data import translation_rows, write_jsonl

    data = work / "data"
    return {
        "cls_train": write_csv(data / "train.csv", sentence_rows(512, 1)),
        "cls_dev": write_csv(data / "dev.csv", sentence_rows(32, 2)),
        "cls_big": write_csv(data / "big.csv", sentence_rows(4096, 3)),
        "mt_train": write_jsonl(data / "train.jsonl", translation_rows(256, 1)),
        "mt_dev": write_jsonl(data / "dev.jsonl", translation_rows(16, 2)),
    }


def recipe(setup: Setup, family: str, method: str, task: str, out: Path, **train: Any) -> dict:
    files = setup.data
    if task == "classification":
        task_section: dict[str, Any] = {"type": "classification", "text": "text", "label": "label"}
        data = {"train": str(files["cls_train"]), "eval": str(files["cls_dev"])}
    else:
        task_section = {"type": "translation", "source_lang": "en", "target_lang": "de"}
        data = {"train": str(files["mt_train"]), "eval": str(files["mt_dev"])}
    return {
        "model": {"name": str(setup.models[family])},
        "task": task_section,
        "data": data,
        "method": dict(METHODS[method]),
        "train": {
            "max_steps": setup.steps,
            "batch_size": setup.batch,
            "max_length": 64,
            "max_target_length": 16,
            "lr": 1e-4 if method == "full" else 1e-3,
            "precision": "bf16" if setup.gpu else "fp32",
            "logging_steps": 1,
            "seed": 0,
            **train,
        },
        "eval": {"batch_size": 16, "generation": {"max_new_tokens": 8}},
        "output": {"dir": str(out)},
    }


# --------------------------------------------------------------------------- running


def reset_memory() -> None:
    import torch

    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()


def run_recipe(setup: Setup, name: str, data: dict) -> dict[str, Any]:
    """`finetune run` in this process; returns metrics.json."""
    import yaml

    from finetune.commands.run import run

    path = setup.work / f"{name}.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    reset_memory()
    summary = run(path, overwrite=True, progress=False)
    return {**summary.metrics, "total_parameters": summary.total}


def reload_metrics(run_dir: Path) -> dict[str, Any]:
    from finetune.commands.evaluate import evaluate_run

    reset_memory()
    return evaluate_run(run_dir)


def same_metrics(a: dict[str, Any], b: dict[str, Any], keys: tuple[str, ...]) -> bool:
    for key in keys:
        if key in a and a[key] is not None and abs(float(a[key]) - float(b.get(key, 1e9))) > 2e-2:
            return False
    return True


def check_matrix(setup: Setup) -> None:
    for family in FAMILIES:
        for method in METHODS:
            for task in ("classification", "translation"):
                name = f"{family}-{method}-{task}"
                if setup.cells and name not in setup.cells:
                    continue
                if not setup.time_left():
                    setup.record(Check(f"matrix {name}", False, "not run: out of time"))
                    continue
                out = setup.work / "runs" / name
                began = time.perf_counter()
                try:
                    metrics = run_recipe(setup, name, recipe(setup, family, method, task, out))
                    again = reload_metrics(out)
                    keys = ("loss", "accuracy") if task == "classification" else ("loss",)
                    ok = same_metrics(metrics, again, keys)
                    loss = metrics.get("train_loss")
                    detail = f"train_loss {loss:.4f}, eval reload {'matches' if ok else 'DIFFERS'}"
                    if method == "lora":  # predict on the GPU, and merge with its parity check
                        ok, more = predict_and_merge(setup, out, name, ok)
                        detail += more
                    detail += f", peak {mb(_peak(metrics))}, {time.perf_counter() - began:.0f} s"
                    setup.record(Check(f"matrix {name}", ok, detail, _peaks(metrics)))
                except Exception as exc:  # one failing cell must not hide the others
                    setup.record(Check(f"matrix {name}", False, f"{type(exc).__name__}: {exc}"))


def predict_and_merge(setup: Setup, run_dir: Path, name: str, ok: bool) -> tuple[bool, str]:
    from finetune.commands.evaluate import predict_texts
    from finetune.commands.merge import merge_run

    records = predict_texts(run_dir, ["a fine film", "a dull film"])
    merged = merge_run(run_dir, setup.work / "merged" / name, overwrite=True)
    detail = f", predict {len(records)} records, merge max diff {merged.max_abs_diff:.1e}"
    return ok and len(records) == 2, detail


def _peaks(metrics: dict[str, Any]) -> dict[str, Any]:
    keys = ("peak_gpu_allocated_bytes", "peak_gpu_reserved_bytes", "peak_memory_bytes")
    return {k: metrics[k] for k in keys if k in metrics}


def _peak(metrics: dict[str, Any]) -> int:
    return int(metrics.get("peak_gpu_allocated_bytes", metrics["peak_memory_bytes"]))


def check_gradient_checkpointing(setup: Setup) -> None:
    found = {}
    for on in (False, True):
        out = setup.work / "runs" / f"gc-{on}"
        data = recipe(
            setup,
            "bert",
            "lora",
            "classification",
            out,
            gradient_checkpointing=on,
            batch_size=64 if setup.gpu else setup.batch,
        )  # activations that show
        data["method"]["dropout"] = 0.0
        found[on] = run_recipe(setup, f"gc-{on}", data)
    same = abs(found[True]["train_loss"] - found[False]["train_loss"]) < 1e-2
    off, on_ = _peak(found[False]), _peak(found[True])
    detail = f"loss equal: {same}; peak memory off {mb(off)}, on {mb(on_)} ({on_ / off:.2f}x)"
    setup.record(Check("gradient checkpointing", same, detail, {"off": off, "on": on_}))


def check_fp16(setup: Setup) -> None:
    """fp16 autocast with the gradient scaler (GPUs without bf16), and auto -> bf16 here."""
    found = {}
    for precision in ("fp16", "auto"):
        out = setup.work / "runs" / f"precision-{precision}"
        data = recipe(setup, "bert", "lora", "classification", out)
        data["train"]["precision"] = precision if setup.gpu else "fp32"
        metrics = run_recipe(setup, f"precision-{precision}", data)
        again = reload_metrics(out)
        found[precision] = (metrics, same_metrics(metrics, again, ("loss", "accuracy")))
    (fp16, fp16_ok), (auto, auto_ok) = found["fp16"], found["auto"]
    resolved = auto.get("mixed_precision", "?")
    finite = all(v == v for v in (fp16["train_loss"], fp16.get("loss", 0.0)))
    ok = fp16_ok and auto_ok and finite and (resolved == "bf16" or not setup.gpu)
    same = "matches" if fp16_ok else "DIFFERS"
    detail = f"fp16 train_loss {fp16['train_loss']:.4f}, reload {same}; auto ran as {resolved}"
    setup.record(Check("precision fp16 / auto", ok, detail))


def check_qlora(setup: Setup) -> None:
    if not setup.gpu or importlib.util.find_spec("bitsandbytes") is None:
        why = "no CUDA GPU" if not setup.gpu else "bitsandbytes not installed (carry its wheel)"
        setup.record(Check("QLoRA 4-bit gpt2", True, f"skipped: {why}"))
        return
    out = setup.work / "runs" / "qlora"
    data = recipe(setup, "gpt2", "lora", "translation", out)
    data["model"]["quantization"] = {"bits": 4}
    try:
        metrics = run_recipe(setup, "qlora", data)
        again = reload_metrics(out)
        ok = same_metrics(metrics, again, ("loss",))
        detail = (f"train_loss {metrics['train_loss']:.4f}, peak {mb(_peak(metrics))}, "
                  f"eval reload {'matches' if ok else 'DIFFERS'}")  # fmt: skip
        ok, more = predict_and_merge(setup, out, "qlora", ok)
        setup.record(Check("QLoRA 4-bit gpt2", ok, detail + more, _peaks(metrics)))
    except Exception as exc:
        setup.record(Check("QLoRA 4-bit gpt2", False, f"{type(exc).__name__}: {exc}"))


def check_fsdp(setup: Setup) -> None:
    """FSDP with one process: wrapping and the gathered save (a subprocess: accelerate launch),
    for an adapter (trainable tensors gathered) and full fine-tuning (the whole model)."""
    for method in ("lora", "full"):
        if setup.time_left():
            _fsdp_one(setup, method)


def _fsdp_one(setup: Setup, method: str) -> None:
    import yaml

    name = f"FSDP 1 process {method}"
    out = setup.work / "runs" / f"fsdp-{method}"
    path = setup.work / f"fsdp-{method}.yaml"
    path.write_text(yaml.safe_dump(recipe(setup, "bert", method, "classification", out)))
    config = REPO / "recipes" / "accelerate" / "fsdp.yaml"
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--config_file", str(config),
           "--num_processes", "1", "-m", "finetune", "run", str(path), "--no-progress"]  # fmt: skip
    paths = [str(REPO), *filter(None, [os.environ.get("PYTHONPATH")])]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(paths)}
    done = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
    if setup.out is not None:  # the whole launcher log, beside the table
        setup.out.with_name(f"fsdp_{method}_log.txt").write_text(done.stdout + done.stderr)
    if done.returncode != 0:
        tail = _cause(done.stdout + done.stderr)
        setup.record(Check(name, False, f"exit {done.returncode}: {tail}"))
        return
    metrics = json.loads((out / "metrics.json").read_text())
    again = reload_metrics(out)
    ok = same_metrics(metrics, again, ("loss", "accuracy"))
    kind = metrics.get("distributed_type")
    detail = (f"distributed_type {kind}; reload {'matches' if ok else 'DIFFERS'}; "
              f"train_loss {metrics['train_loss']:.4f}")  # fmt: skip
    setup.record(Check(name, ok and (kind == "FSDP" or not setup.gpu), detail))


def _cause(output: str) -> str:
    """The exception lines of a failed launch (torchrun's own summary hides them)."""
    lines = [line for line in output.splitlines() if "Error" in line or "error:" in line]
    lines = [line for line in lines if "ChildFailedError" not in line and "elastic" not in line]
    return " / ".join(dict.fromkeys(lines))[-800:] or output[-600:].replace("\n", " ")


def check_memory_ratio(setup: Setup) -> None:
    """LoRA's peak above the loaded weights, as a fraction of full fine-tuning's (goal <= 0.6)."""
    peaks, weights = {}, 0
    for method in ("lora", "full"):
        out = setup.work / "runs" / f"mem-{method}"
        metrics = run_recipe(
            setup, f"mem-{method}", recipe(setup, "bert", method, "classification", out)
        )
        peaks[method] = _peak(metrics)
        weights = int(metrics["total_parameters"]) * 4  # fp32 weights
    above = {m: max(p - weights, 1) for m, p in peaks.items()}
    ratio = above["lora"] / above["full"]
    detail = (f"above the weights ({mb(weights)}): lora {mb(above['lora'])}, "
              f"full {mb(above['full'])}, ratio {ratio:.2f} (goal <= 0.6)")  # fmt: skip
    setup.record(Check("memory LoRA / full (bert-base)", ratio <= 0.6 or not setup.gpu, detail,
                       {"ratio": round(ratio, 3), **peaks}))  # fmt: skip


@dataclass(frozen=True)
class Speed:
    """One throughput comparison, the same for every side: model, LoRA targets, batch, lengths
    and steps. Each side is timed over the steps after the first third (the warm-up, where
    kernels load and a compiled side compiles or loads its cached graphs), as the steady rate
    a longer run settles to."""

    family: str
    name: str  # the check's row
    targets: tuple[str, ...]
    batch: int
    max_length: int
    steps: int  # on the GPU; the dry mode runs 6 x its steps
    goal: float  # x the Trainer, on an H100/H200

    def timed(self, steps: int) -> tuple[int, int]:
        return steps // 3, steps


BERT_SPEED = Speed("bert", "throughput vs Trainer", ("query", "value"), 32, 64, 150, 2.0)
DECODER_SPEED = Speed(
    "llama", "decoder throughput vs Trainer", ("q_proj", "v_proj"), 16, 48, 120, 1.5
)
# ours eager, with compiled blocks, and with the forward compiled whole as CUDA graphs
OUR_SIDES: dict[str, dict[str, Any]] = {
    "ours": {},
    "ours compiled": {"compile": True},
    "ours CUDA graphs": {"compile": True, "cuda_graphs": True},
}


def check_throughput(setup: Setup) -> None:
    """bert-base LoRA classification: ours / transformers.Trainer + peft (bf16,
    group_by_length), MFU beside each (6)."""
    compare_speed(setup, BERT_SPEED)


def check_decoder_throughput(setup: Setup) -> None:
    """The same on a SmolLM2-135M-size random Llama, LoRA r8 on q/v, classification (6)."""
    compare_speed(setup, DECODER_SPEED)


def compare_speed(setup: Setup, spec: Speed) -> None:
    """Each side's steady rate over the same steps, after its warm-up: whichever side ran first
    on a GPU used to pay for loading kernels and choosing a GEMM for every new shape
    (2026-11-26 on an H200, whole runs measured in a fixed order: ours first 312 samples/s,
    Trainer second 619), and a compiled side pays its compile there. A side that fails is
    reported in the row and leaves the others their numbers."""
    steps = spec.steps if setup.gpu else setup.steps * 6
    speeds: dict[str, float] = {}
    failed: dict[str, str] = {}
    for side in setup.sides or ("trainer", *OUR_SIDES):  # --sides: those, in that order
        if not setup.time_left():
            failed[side] = "not run: out of time"
            continue
        try:
            if side == "trainer":
                speeds[side] = trainer_samples_per_s(setup, spec, steps)
            else:
                speeds[side] = ours_samples_per_s(setup, spec, steps, side)
        except Exception as exc:
            failed[side] = f"{type(exc).__name__}: {exc}"[:300]
        print(f"{spec.name}: {side}: {speeds.get(side, failed.get(side))}", flush=True)
    if spec is BERT_SPEED:
        with profiled(setup, "profile_ours.txt"), profiled(setup, "profile_trainer.txt"):
            pass
    theirs = speeds.get("trainer", 0.0)
    ours = max((v for side, v in speeds.items() if side != "trainer"), default=0.0)
    ratio = ours / theirs if theirs else float("nan")
    tokens = tokens_per_row(setup, spec, steps)
    mfu = {side: model_flops_utilisation(v, tokens, setup, spec) for side, v in speeds.items()}
    first, last = spec.timed(steps)
    shown = ", ".join(f"{k} {v:.1f} samples/s (MFU {_share(mfu[k])})" for k, v in speeds.items())
    detail = (f"LoRA r8 {'/'.join(spec.targets)}, batch {spec.batch}, max_length "
              f"{spec.max_length}, {tokens:.1f} tokens a row; steady samples/s over steps "
              f"{first}-{last}: {shown}: {ratio:.2f}x the Trainer (goal >= {spec.goal:g} on an "
              "H100/H200)")  # fmt: skip
    notes = [setup.notes.pop(side) for side in OUR_SIDES if side in setup.notes]
    detail += "".join(f"; {note}" for note in notes)
    if failed:
        detail += "; failed: " + "; ".join(f"{k}: {v}" for k, v in failed.items())
    ok = not failed and (ratio >= spec.goal or not setup.gpu)
    setup.record(Check(spec.name, ok, detail,
                       {**speeds, "ratio": round(ratio, 3),
                        **{f"mfu {k}": v for k, v in mfu.items()}}))  # fmt: skip


def ours_samples_per_s(setup: Setup, spec: Speed, steps: int, side: str) -> float:
    """`finetune run` of the side's recipe; the steady rate from its log.jsonl, whose
    `elapsed_s` is read after the logged steps' losses came back from the device."""
    name = f"speed-{spec.family}-{side.replace(' ', '-')}"
    out = setup.work / "runs" / name
    data = recipe(setup, spec.family, "lora", "classification", out, max_steps=steps,
                  batch_size=spec.batch, max_length=spec.max_length,
                  logging_steps=spec.timed(steps)[0], **OUR_SIDES[side])  # fmt: skip
    data["method"]["target_modules"] = list(spec.targets)
    data["data"]["train"] = str(setup.data["cls_big"])  # 4,096 rows: no epoch ends
    from torch._dynamo.utils import counters

    breaks, graphs = sum(counters["graph_break"].values()), counters["stats"]["unique_graphs"]
    skips = counters["inductor"]["cudagraph_skips"]
    run_recipe(setup, name, data)
    if OUR_SIDES[side].get("compile"):
        setup.notes[side] = (
            f"{side}: {counters['stats']['unique_graphs'] - graphs} graphs compiled, "
            f"{sum(counters['graph_break'].values()) - breaks} graph breaks"
            + (f", {counters['inductor']['cudagraph_skips'] - skips} graphs ran without a CUDA "
               "graph" if OUR_SIDES[side].get("cuda_graphs") else "")
        )  # fmt: skip
    logged = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    elapsed = {row["step"]: row["elapsed_s"] for row in logged if "elapsed_s" in row}
    first, last = spec.timed(steps)
    return (last - first) * spec.batch / (elapsed[last] - elapsed[first])


def check_packing(setup: Setup) -> None:
    """Padding-free packed batches on a decoder (benchmarks/packing.py): per-sequence losses
    equal to padded batches' (fp32, and bf16 on the GPU), positions that do not restart caught
    as different, then LoRA r8 training steps padded vs packed on a SmolLM2-135M-size random
    Llama (tiny in the dry mode), best of interleaved rounds."""
    from benchmarks.packing import TOLERANCE, measure

    gpu = setup.gpu
    found = measure(gpu, batch=16 if gpu else 4, steps=40 if gpu else 4, rounds=2 if gpu else 1)
    tolerance = TOLERANCE["cuda" if gpu else "cpu"]
    equal = found.fp32_diff <= tolerance and (found.bf16_diff or 0.0) <= TOLERANCE["bf16"]
    caught = found.run_on_diff > 10 * tolerance
    bf16 = "" if found.bf16_diff is None else f", bf16 {found.bf16_diff:.2e}"
    bf16 += f" (<= {TOLERANCE['bf16']})" if bf16 else ""
    detail = (f"fp32 {found.fp32_diff:.2e} (<= {tolerance:g}){bf16}; positions not restarting: "
              f"{found.run_on_diff:.2e} ({'caught' if caught else 'NOT caught'})")  # fmt: skip
    setup.record(Check("packed == padded per-sequence losses: max |diff|", equal and caught,
                       detail, {"fp32": found.fp32_diff, "bf16": found.bf16_diff,
                                "run_on": found.run_on_diff}))  # fmt: skip
    best = {side: {key: found.best(side, key) for key in ("samples_per_s", "tokens_per_s")}
            for side in found.speeds}  # fmt: skip
    ratio = best["packed"]["samples_per_s"] / best["padded"]["samples_per_s"]
    shown = ", ".join(f"{side} {v['samples_per_s']:.1f} samples/s {v['tokens_per_s']:.0f} tokens/s"
                      for side, v in best.items())  # fmt: skip
    size = "SmolLM2-135M-size Llama, bf16 autocast" if gpu else "tiny Llama, fp32"
    detail = (f"{size}, LoRA r8 q/v, sdpa; {shown}: packed/padded {ratio:.2f}x "
              f"({100 * found.padding:.0f}% of the padded tokens were pads)")  # fmt: skip
    setup.record(Check("packing throughput packed/padded", True, detail,
                       {**{f"{s} {k}": v for s, d in best.items() for k, v in d.items()},
                        "ratio": round(ratio, 3)}))  # fmt: skip


# bf16 dense tensor peak (FLOP/s) of the GPUs this check runs on (vendor data sheets, SXM)
PEAK_BF16 = {"H100": 989e12, "H200": 989e12, "A100": 312e12, "L4": 121e12, "A10": 125e12}


def peak_flops(setup: Setup) -> float | None:
    if not setup.gpu:
        return None
    name = device_name(True)
    return next((peak for key, peak in PEAK_BF16.items() if key in name), None)


def tokens_per_row(setup: Setup, spec: Speed, steps: int) -> float:
    """Real (unpadded) tokens per row of the rows the steps train on, with the model's
    tokenizer."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(setup.models[spec.family])
    texts = [row["text"] for row in _rows(setup)][: steps * spec.batch]
    ids = tokenizer(texts, truncation=True, max_length=spec.max_length)["input_ids"]
    return sum(len(i) for i in ids) / len(ids)


def model_flops_utilisation(
    samples_per_s: float, tokens: float, setup: Setup, spec: Speed
) -> float | None:
    """Achieved / peak FLOP/s, counting a frozen-backbone LoRA step as 4 x N FLOPs per real
    token (forward 2N, backward through frozen weights for the activations 2N, no weight
    gradients; N: the model's matmul weights, embeddings and head excluded); attention's own
    FLOPs and padded tokens left out, as PaLM's MFU does. None without a known peak (the CPU
    dry mode)."""
    peak = peak_flops(setup)
    if peak is None:
        return None
    return samples_per_s * tokens * 4 * MATMUL_PARAMS[spec.family] / peak


def _share(value: float | None) -> str:
    return "n/a" if value is None else f"{100 * value:.1f}%"


@contextlib.contextmanager
def profiled(setup: Setup, name: str) -> Any:
    """With --profile: where the host's time goes (cProfile, top 25 by own time and by
    cumulative time), beside the table; a blocking read of the GPU shows up as time in
    `item`/`tolist`/`synchronize`/`to`. The profiled numbers are a second run's, not the
    reported throughput."""
    yield
    if not setup.profile or setup.out is None:
        return
    import cProfile
    import io
    import pstats

    profile = cProfile.Profile()
    profile.enable()
    try:
        if name == "profile_ours.txt":
            ours_samples_per_s(setup, BERT_SPEED, 60, "ours")
        else:
            trainer_samples_per_s(setup, BERT_SPEED, 60)
    finally:
        profile.disable()
    text = io.StringIO()
    stats = pstats.Stats(profile, stream=text)
    stats.sort_stats("tottime").print_stats(25)
    stats.sort_stats("cumulative").print_stats(25)
    setup.out.with_name(name).write_text(text.getvalue())


def trainer_samples_per_s(setup: Setup, spec: Speed, steps: int) -> float:
    """transformers.Trainer + peft on the same rows, batch, lengths and LoRA targets, bf16 on
    the GPU, length-grouped batches; its steady rate over the same steps as ours, the device
    synchronised at both ends."""
    import dataclasses

    import peft
    import torch
    from transformers import (
        AutoModelForSequenceClassification,
        AutoTokenizer,
        DataCollatorWithPadding,
        Trainer,
        TrainerCallback,
        TrainingArguments,
    )

    reset_memory()
    path = setup.models[spec.family]
    tokenizer = AutoTokenizer.from_pretrained(path)
    if tokenizer.pad_token is None:  # decoders: pad with EOS, as finetune does
        tokenizer.pad_token = tokenizer.eos_token
    features = [
        {**tokenizer(r["text"], truncation=True, max_length=spec.max_length),
         "labels": int(r["label"])}
        for r in _rows(setup)
    ]  # fmt: skip
    model = AutoModelForSequenceClassification.from_pretrained(path, num_labels=2)
    model.config.pad_token_id = tokenizer.pad_token_id
    lora = peft.LoraConfig(task_type="SEQ_CLS", r=8, lora_alpha=16, lora_dropout=0.05,
                           target_modules=list(spec.targets))  # fmt: skip
    model = peft.get_peft_model(model, lora)
    names = {f.name for f in dataclasses.fields(TrainingArguments)}
    # transformers 5.x renamed group_by_length=True to train_sampling_strategy="group_by_length"
    grouping: dict[str, Any] = (
        {"train_sampling_strategy": "group_by_length"}
        if "train_sampling_strategy" in names
        else {"group_by_length": True}
    )
    args = TrainingArguments(
        **grouping,
        output_dir=str(setup.work / "trainer"),
        per_device_train_batch_size=spec.batch,
        max_steps=steps,
        learning_rate=1e-3,
        bf16=setup.gpu and torch.cuda.is_bf16_supported(),
        logging_steps=spec.timed(steps)[0],
        save_strategy="no",
        report_to=[],
        use_cpu=not setup.gpu,
        dataloader_num_workers=0,
    )
    marks = spec.timed(steps)
    clock: dict[int, float] = {}

    class Clock(TrainerCallback):
        def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            if state.global_step in marks:
                if setup.gpu:
                    torch.cuda.synchronize()
                clock[state.global_step] = time.perf_counter()

    trainer = Trainer(model=model, args=args, train_dataset=features,
                      data_collator=DataCollatorWithPadding(tokenizer),
                      callbacks=[Clock()])  # fmt: skip
    trainer.train()
    return (marks[1] - marks[0]) * spec.batch / (clock[marks[1]] - clock[marks[0]])


def _rows(setup: Setup) -> list[dict[str, str]]:
    import csv

    with open(setup.data["cls_big"], newline="") as handle:
        return list(csv.DictReader(handle))


def mb(value: float) -> str:
    return f"{value / 2**20:.0f} MiB"


# --------------------------------------------------------------------------- report


def device_name(gpu: bool) -> str:
    if gpu:
        import torch

        return torch.cuda.get_device_name(0)
    return f"CPU ({platform.processor() or platform.machine()}, {os.cpu_count()} cores)"


def report(setup: Setup, seconds: float) -> str:
    import accelerate
    import peft
    import torch
    import transformers

    bnb = importlib.util.find_spec("bitsandbytes") is not None
    lines = [
        f"# GPU check ({'GPU' if setup.gpu else 'CPU dry mode'})",
        "",
        f"- device: {device_name(setup.gpu)}",
        f"- date: {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}",
        f"- torch {torch.__version__}, transformers {transformers.__version__}, peft "
        f"{peft.__version__}, accelerate {accelerate.__version__}, bitsandbytes "
        f"{_version('bitsandbytes') if bnb else 'not installed'}",
        f"- sizes: {'real (bert-base, gpt2, t5-small, SmolLM2-135M)' if setup.gpu else 'tiny'}, "
        f"{setup.steps} steps, batch {setup.batch}; wall {seconds:.0f} s",
        "",
        "| check | result | detail |",
        "|---|---|---|",
    ]
    for check in setup.checks:
        name, detail = (text.replace("|", "\\|") for text in (check.name, check.detail))
        lines.append(f"| {name} | {'ok' if check.ok else 'FAIL'} | {detail} |")
    return "\n".join(lines) + "\n"


def _version(name: str) -> str:
    from importlib.metadata import version

    return version(name)


def needed_families(checks: list[str], cells: list[str]) -> list[str]:
    """Only the models the chosen checks use are built (building bert-base takes seconds)."""
    wanted: set[str] = set()
    if "matrix" in checks:
        wanted = {cell.split("-")[0] for cell in cells} if cells else set(FAMILIES)
    if set(checks) & {"checkpointing", "precision", "fsdp", "memory", "throughput"}:
        wanted.add("bert")
    if "qlora" in checks:
        wanted.add("gpt2")
    if "decoder" in checks:
        wanted.add("llama")
    return [f for f in (*FAMILIES, "llama") if f in wanted]


def missing_modules() -> list[str]:
    return [m for m in NEEDED if importlib.util.find_spec(m) is None]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--device", choices=["cuda", "cpu"], default="cuda")
    parser.add_argument("--out", type=Path, help="also write the table here")
    parser.add_argument("--check-imports", action="store_true", help="list missing modules")
    parser.add_argument(
        "--only",
        default="checkpointing,precision,memory,throughput,decoder,packing,qlora,fsdp,matrix",
        help="comma-separated subset of the checks",
    )
    parser.add_argument("--cells", default="", help="matrix cells, e.g. bert-lora-classification")
    parser.add_argument("--profile", action="store_true", help="cProfile the throughput runs")
    parser.add_argument("--sides", default="", help="throughput sides, in order")
    parser.add_argument("--budget", type=float, default=float("inf"),
                        help="seconds after which no further check starts")  # fmt: skip
    args = parser.parse_args(argv)
    missing = missing_modules()
    if args.check_imports or missing:
        print("missing modules: " + (", ".join(missing) or "none"))
        return 1 if missing else 0
    import torch

    gpu = args.device == "cuda"
    if gpu and not torch.cuda.is_available():
        print("no CUDA GPU here: use --device cpu for the dry mode")
        return 2
    from finetune.logs import setup_logging

    setup_logging(quiet=True)
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        setup = Setup(gpu=gpu, work=Path(tmp), steps=5 if gpu else 2, batch=16 if gpu else 4)
        setup.out, setup.deadline = args.out, started + args.budget
        setup.profile = args.profile
        setup.sides = [side for side in args.sides.split(",") if side]
        setup.cells = [c for c in args.cells.split(",") if c]
        setup.data = write_data(setup.work)
        for family in needed_families(args.only.split(","), setup.cells):
            setup.models[family] = build_model(family, setup.work / "models" / family, real=gpu)
        checks = {
            "matrix": check_matrix,
            "checkpointing": check_gradient_checkpointing,
            "precision": check_fp16,
            "qlora": check_qlora,
            "fsdp": check_fsdp,
            "memory": check_memory_ratio,
            "throughput": check_throughput,
            "decoder": check_decoder_throughput,
            "packing": check_packing,
        }
        for name in args.only.split(","):
            if not setup.time_left():
                setup.record(Check(name, False, "not run: out of time"))
                continue
            try:
                checks[name](setup)
            except Exception as exc:
                setup.record(Check(name, False, f"{type(exc).__name__}: {exc}"))
        table = report(setup, time.perf_counter() - started)
    print(table)
    if args.out:
        args.out.write_text(table)
    if gpu:
        RESULTS.mkdir(parents=True, exist_ok=True)
        slug = device_name(gpu).replace(" ", "_").replace("/", "_")
        (RESULTS / f"gpu_{slug}_{time.strftime('%Y%m%d')}.md").write_text(table)
    with contextlib.suppress(Exception):
        torch.cuda.empty_cache()
    return 0 if all(c.ok for c in setup.checks) else 1


if __name__ == "__main__":
    sys.exit(main())
