"""Peak memory of one training step with and without `train.gradient_checkpointing` (CPU).

    python benchmarks/checkpointing_memory.py      # about a minute on 2 cores

Each (family, method, checkpointing) setting runs in a fresh process, which builds a
random-initialised model of a mid-sized config (8 layers, width 512, sequence 256, batch 16),
records its resident set size, runs one forward + backward and reports the peak RSS growth over
the loaded model: the activations (and gradients) a step holds. On a GPU the same comparison is
made by benchmarks/gpu_check.py with the allocator's peak. Results go to stdout and to
benchmarks/results/checkpointing_memory.md.
"""

from __future__ import annotations

import json
import os
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results"
SETTINGS = [(f, m) for f in ("bert", "gpt2", "t5") for m in ("lora", "full")]


def rss_bytes() -> int:
    with open("/proc/self/statm") as handle:
        return int(handle.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def one(family: str, method: str, checkpointing: bool) -> dict:
    import peft
    import torch
    from transformers import (
        BertConfig,
        BertForSequenceClassification,
        GPT2Config,
        GPT2LMHeadModel,
        T5Config,
        T5ForConditionalGeneration,
    )

    from finetune.models.memory import enable_gradient_checkpointing

    torch.manual_seed(0)
    torch.set_num_threads(1)
    batch, length = 16, 256
    if family == "bert":
        config = BertConfig(hidden_size=512, num_hidden_layers=8, num_attention_heads=8,
                            intermediate_size=2048, vocab_size=8000)  # fmt: skip
        model = BertForSequenceClassification(config)
        targets, task = ["query", "value"], "SEQ_CLS"
        inputs = {"labels": torch.randint(0, 2, (batch,))}
    elif family == "gpt2":
        model = GPT2LMHeadModel(GPT2Config(n_embd=512, n_layer=8, n_head=8, vocab_size=8000))
        targets, task = ["c_attn"], "CAUSAL_LM"
        inputs = {"labels": torch.randint(0, 8000, (batch, length))}
    else:
        config = T5Config(d_model=512, d_ff=2048, d_kv=64, num_layers=4, num_heads=8,
                          vocab_size=8000, decoder_start_token_id=0)  # fmt: skip
        model = T5ForConditionalGeneration(config)
        targets, task = ["q", "v"], "SEQ_2_SEQ_LM"
        inputs = {"labels": torch.randint(0, 8000, (batch, length // 4))}
    if method == "lora":
        lora = peft.LoraConfig(task_type=task, r=8, target_modules=targets)
        model = peft.get_peft_model(model, lora)
    if checkpointing:
        enable_gradient_checkpointing(model)
    model.train()
    ids = torch.randint(5, 8000, (batch, length))
    before = rss_bytes()
    started = time.perf_counter()
    loss = model(input_ids=ids, attention_mask=torch.ones_like(ids), **inputs).loss
    loss.backward()
    seconds = time.perf_counter() - started
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    return {"step_bytes": peak - before, "seconds": seconds, "loss": float(loss.detach())}


def main() -> int:
    if len(sys.argv) == 4:  # the child: one setting
        print(json.dumps(one(sys.argv[1], sys.argv[2], sys.argv[3] == "1")))
        return 0
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    lines = [
        "# Gradient checkpointing: peak memory of one training step (CPU, RSS)",
        "",
        f"- machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores; "
        f"date {time.strftime('%Y-%m-%d', time.gmtime())}",
        "- config: 8 layers (T5: 4 + 4), width 512, batch 16 x 256 tokens, fp32; one forward "
        "+ backward; peak RSS growth over the loaded model",
        "",
        "| family | method | step memory off | on | on / off | loss off = on | time on / off |",
        "|---|---|---|---|---|---|---|",
    ]
    for family, method in SETTINGS:
        found = {}
        for flag in ("0", "1"):
            cmd = [sys.executable, __file__, family, method, flag]
            done = subprocess.run(cmd, capture_output=True, text=True, env=env, check=True)
            found[flag] = json.loads(done.stdout.strip().splitlines()[-1])
        off, on = found["0"], found["1"]
        same = abs(off["loss"] - on["loss"]) < 1e-4
        lines.append(
            f"| {family} | {method} | {off['step_bytes'] / 2**20:.0f} MiB | "
            f"{on['step_bytes'] / 2**20:.0f} MiB | {on['step_bytes'] / off['step_bytes']:.2f} | "
            f"{same} | {on['seconds'] / off['seconds']:.2f} |"
        )
        print(lines[-1], flush=True)
    table = "\n".join(lines) + "\n"
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "checkpointing_memory.md").write_text(table)
    print(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
