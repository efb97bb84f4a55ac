"""Padding-free packed batches for decoders against padded ones (issue #24 §3, gpu_check's 7).

A padded batch right-pads every prompt+target sequence to the batch's longest and masks the
pads with `attention_mask`: the pads cost a forward and backward of their own. A packed batch
concatenates the same sequences into one row of exactly their tokens, with `position_ids`
restarting at 0 for every sequence, no `attention_mask`, and the label at each sequence's first
position set to -100 (so no token is predicted across a boundary): what transformers'
`DataCollatorWithFlattening` builds. transformers 5 reads the restarts from `position_ids`:
for sdpa/eager `masking_utils.find_packed_sequence_indices` turns them into a block-diagonal
causal mask (only when `attention_mask` is None and there is no cache, hence `use_cache=False`);
flash-attention calls its varlen kernel with `cu_seqlens` taken from them
(`modeling_flash_attention_utils._is_packed_sequence`, `prepare_fa_kwargs_from_position_ids`).

The check: per-sequence mean losses equal both ways (a packed batch that let attention cross a
boundary, or positions that ran on, gives other losses: `restart_positions=False` shows it),
then training steps timed both ways on the same sequences.
"""

from __future__ import annotations

import random
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # pragma: no cover
    import torch

IGNORE = -100
# SmolLM2-135M's shape (its published config), and the dry mode's tiny one
SMOLLM2_SIZE: dict[str, Any] = {
    "hidden_size": 576, "num_hidden_layers": 30, "num_attention_heads": 9,
    "num_key_value_heads": 3, "intermediate_size": 1536, "vocab_size": 49152,
}  # fmt: skip
TINY_SIZE: dict[str, Any] = {
    "hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 4,
    "num_key_value_heads": 2, "intermediate_size": 64, "vocab_size": 256,
}  # fmt: skip


@dataclass(frozen=True)
class Example:
    """One prompt+target sequence: labels are -100 on the prompt."""

    input_ids: list[int]
    labels: list[int]


def random_llama(real: bool, seed: int = 0) -> Any:
    """A random-initialised Llama of SmolLM2-135M's size (or tiny), sdpa attention."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    sizes = {**(SMOLLM2_SIZE if real else TINY_SIZE), "max_position_embeddings": 2048,
             "tie_word_embeddings": True, "attn_implementation": "sdpa"}  # fmt: skip
    config = LlamaConfig(**sizes)
    return LlamaForCausalLM(config)


def examples(n: int, vocab: int, seed: int, real: bool) -> list[Example]:
    """Prompts and targets whose lengths vary as in real text (log-normal, a long tail):
    on real sizes a median of ~70 prompt and ~20 target tokens, capped at 512 together."""
    rng = random.Random(seed)
    scale = (4.2, 2.9, 512) if real else (2.3, 1.4, 40)
    found = []
    for _ in range(n):
        prompt = max(2, int(rng.lognormvariate(scale[0], 0.7)))
        target = max(1, int(rng.lognormvariate(scale[1], 0.6)))
        prompt = min(prompt, scale[2] - target)
        ids = [rng.randrange(1, vocab) for _ in range(prompt + target)]
        found.append(Example(ids, [IGNORE] * prompt + ids[prompt:]))
    return found


def padded_batch(batch: Sequence[Example], pad_id: int = 0) -> dict[str, torch.Tensor]:
    """Right-padded to the longest: input_ids, attention_mask, labels (-100 on the pads)."""
    import torch

    width = max(len(e.input_ids) for e in batch)
    ids = [e.input_ids + [pad_id] * (width - len(e.input_ids)) for e in batch]
    mask = [[1] * len(e.input_ids) + [0] * (width - len(e.input_ids)) for e in batch]
    labels = [e.labels + [IGNORE] * (width - len(e.labels)) for e in batch]
    return {"input_ids": torch.tensor(ids), "attention_mask": torch.tensor(mask),
            "labels": torch.tensor(labels)}  # fmt: skip


def packed_batch(batch: Sequence[Example], restart_positions: bool = True) -> dict[str, Any]:
    """One row of all the sequences (DataCollatorWithFlattening's layout): position_ids
    restarting at 0 per sequence, no attention_mask, -100 at every sequence's first label.
    `restart_positions=False` numbers the row 0..n-1 instead (what the check must catch)."""
    import torch

    ids: list[int] = []
    labels: list[int] = []
    positions: list[int] = []
    for example in batch:
        start = 0 if restart_positions else len(positions)
        positions += range(start, start + len(example.input_ids))
        ids += example.input_ids
        labels += [IGNORE, *example.labels[1:]]
    return {"input_ids": torch.tensor([ids]), "position_ids": torch.tensor([positions]),
            "labels": torch.tensor([labels])}  # fmt: skip


def _token_losses(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Next-token cross-entropy per position (0 where the label is -100), in fp32."""
    import torch.nn.functional as F

    shifted = labels[:, 1:]
    losses = F.cross_entropy(
        logits[:, :-1].float().flatten(0, 1), shifted.flatten(), ignore_index=IGNORE,
        reduction="none",
    )  # fmt: skip
    return losses.view(shifted.shape)


def padded_losses(model: Any, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """Each row's mean loss over its target tokens."""
    inputs = {k: v for k, v in batch.items() if k != "labels"}
    logits = model(**inputs, use_cache=False).logits
    losses = _token_losses(logits, batch["labels"])
    counts = (batch["labels"][:, 1:] != IGNORE).sum(1)
    return losses.sum(1) / counts


def packed_losses(model: Any, batch: dict[str, torch.Tensor], lengths: list[int]) -> torch.Tensor:
    """Each packed sequence's mean loss over its target tokens (`lengths`: the sequences')."""
    import torch

    inputs = {k: v for k, v in batch.items() if k != "labels"}
    logits = model(**inputs, use_cache=False).logits
    losses = _token_losses(logits, batch["labels"])[0]
    which = torch.repeat_interleave(torch.arange(len(lengths)), torch.tensor(lengths))[1:]
    which = which.to(losses.device)
    counted = (batch["labels"][0, 1:] != IGNORE).to(losses.dtype)
    sums = torch.zeros(len(lengths), device=losses.device).index_add_(0, which, losses)
    counts = torch.zeros(len(lengths), device=losses.device).index_add_(0, which, counted)
    return sums / counts


def loss_difference(
    model: Any, batch: Sequence[Example], device: str, restart_positions: bool = True
) -> float:
    """Max |packed - padded| over the batch's per-sequence mean losses (no gradients)."""
    import torch

    lengths = [len(e.input_ids) for e in batch]
    with torch.no_grad():
        padded = padded_losses(model, _to(padded_batch(batch), device))
        packed = packed_losses(model, _to(packed_batch(batch, restart_positions), device), lengths)
    return float((padded - packed).abs().max())


def _to(batch: dict[str, torch.Tensor], device: str) -> dict[str, torch.Tensor]:
    return {k: v.to(device) for k, v in batch.items()}


def lora(model: Any) -> Any:
    """LoRA r8 on q_proj and v_proj (peft), the rest frozen."""
    import peft

    config = peft.LoraConfig(task_type="CAUSAL_LM", r=8, lora_alpha=16, lora_dropout=0.0,
                             target_modules=["q_proj", "v_proj"])  # fmt: skip
    return peft.get_peft_model(model, config)


def batches(data: list[Example], size: int) -> list[list[Example]]:
    return [data[i : i + size] for i in range(0, len(data) - size + 1, size)]


def train_speed(
    model: Any, groups: Iterable[Sequence[Example]], packed: bool, device: str, bf16: bool
) -> dict[str, float]:
    """Training steps (forward, backward, AdamW) over the groups, one padded or packed batch
    each; samples/s and real (non-pad) tokens/s. The first two steps warm up, untimed."""
    import torch

    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=1e-4)
    groups = list(groups)
    samples = tokens = 0
    began = 0.0
    for step, group in enumerate(groups):
        if step == 2:
            _sync(device)
            began = time.perf_counter()
        if step >= 2:
            samples += len(group)
            tokens += sum(len(e.input_ids) for e in group)
        batch = _to(packed_batch(group) if packed else padded_batch(group), device)
        with torch.autocast(device.split(":")[0], dtype=torch.bfloat16, enabled=bf16):
            loss = model(**batch, use_cache=False).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
    _sync(device)
    seconds = time.perf_counter() - began
    return {"samples_per_s": samples / seconds, "tokens_per_s": tokens / seconds}


def _sync(device: str) -> None:
    import torch

    if device.startswith("cuda"):
        torch.cuda.synchronize()


@dataclass
class PackingResult:
    fp32_diff: float  # max |packed - padded| per-sequence loss, fp32
    bf16_diff: float | None  # the same under bf16 autocast (GPU only)
    run_on_diff: float  # packed with positions running on (no restart): must differ
    speeds: dict[str, list[dict[str, float]]]  # padded/packed: one entry per round
    padding: float  # pad tokens / all tokens of the padded batches

    def best(self, side: str, key: str) -> float:
        return max(r[key] for r in self.speeds[side])


# per-sequence loss tolerances: fp32 (kernels differ by layout: 1e-4 on a CPU, 1e-3 for the
# GPU's attention kernels), bf16 autocast (the two layouts round differently). Measured on a
# CPU (2026-12-03, the SmolLM2-size random Llama, 6 sequences of 40-101 tokens): fp32 1.9e-6,
# bf16 9.7e-5, and positions that do not restart 0.24: the check has room both ways.
TOLERANCE = {"cpu": 1e-4, "cuda": 1e-3, "bf16": 2e-2}


def measure(gpu: bool, batch: int, steps: int, rounds: int) -> PackingResult:
    """The equality of losses, then interleaved timing rounds (padded, packed, ...; each side
    has paid for its kernels and shapes by its best round) of LoRA r8 training steps."""
    import torch

    device = "cuda" if gpu else "cpu"
    vocab = (SMOLLM2_SIZE if gpu else TINY_SIZE)["vocab_size"]
    data = examples(batch * (steps + 2), vocab, seed=0, real=gpu)
    model = random_llama(gpu).to(device).eval()
    fp32 = loss_difference(model, data[:batch], device)
    run_on = loss_difference(model, data[:batch], device, restart_positions=False)
    bf16 = None
    if gpu:
        with torch.autocast("cuda", dtype=torch.bfloat16):
            bf16 = loss_difference(model, data[:batch], device)
    model = lora(model.train())
    speeds: dict[str, list[dict[str, float]]] = {"padded": [], "packed": []}
    for _ in range(rounds):
        for side in speeds:
            speeds[side].append(train_speed(model, batches(data, batch), side == "packed",
                                            device, bf16=gpu))  # fmt: skip
    real = sum(len(e.input_ids) for e in data)
    width = sum(max(len(e.input_ids) for e in g) * len(g) for g in batches(data, batch))
    return PackingResult(fp32, bf16, run_on, speeds, 1 - real / width)
