"""Issue #9: the training loop's correctness findings (1, 2, 7, 8, 12, 15, 17, 18, 23).

Each test names its finding. They drive `fit` and `run_eval` directly with tiny models
built here (dropout off, so two trainings can be compared exactly) and a recording optimizer
whose learning rate is 0: the weights never move, so every step's gradients are comparable.
"""

from __future__ import annotations

import json
import random
from typing import Any

import pytest

from finetune.recipe.sections import TrainConfig
from finetune.train.batching import ListDataset
from tests.loop_run import run_fit

IGNORE = -100


# --------------------------------------------------------------------------- helpers


def _gpt2(seed: int = 0) -> Any:
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(seed)
    config = GPT2Config(
        vocab_size=40,
        n_embd=16,
        n_layer=1,
        n_head=2,
        n_positions=128,
        resid_pdrop=0.0,
        embd_pdrop=0.0,
        attn_pdrop=0.0,
    )
    return GPT2LMHeadModel(config)


def _bert_config() -> Any:
    from transformers import BertConfig

    return BertConfig(
        vocab_size=40,
        hidden_size=16,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=32,
        max_position_embeddings=64,
        num_labels=2,
    )


def _causal_features(target_lengths: list[int], seed: int = 0) -> list[dict[str, Any]]:
    """Prompt + target rows whose loss is masked on the prompt, as the generation task builds."""
    rng = random.Random(seed)
    features = []
    for i, n_target in enumerate(target_lengths):
        prompt = [rng.randrange(1, 40) for _ in range(3)]
        target = [rng.randrange(1, 40) for _ in range(n_target)]
        ids = prompt + target
        labels = [IGNORE] * len(prompt) + target
        features.append({"input_ids": ids, "labels": labels, "idx": i, "length": len(ids)})
    return features


def _collate(features: list[dict[str, Any]]) -> dict[str, Any]:
    import torch

    width = max(len(f["input_ids"]) for f in features)
    ids = torch.zeros((len(features), width), dtype=torch.long)
    mask = torch.zeros((len(features), width), dtype=torch.long)
    labels = torch.full((len(features), width), IGNORE, dtype=torch.long)
    for row, feat in enumerate(features):
        n = len(feat["input_ids"])
        ids[row, :n] = torch.tensor(feat["input_ids"])
        mask[row, :n] = 1
        labels[row, :n] = torch.tensor(feat["labels"])
    idx = torch.tensor([f["idx"] for f in features])
    return {"input_ids": ids, "attention_mask": mask, "labels": labels, "idx": idx}


def _recording_optimizer(model: Any) -> Any:
    """SGD at lr 0 that keeps a copy of every step's gradients (the weights never change)."""
    import torch

    class Recording(torch.optim.SGD):
        def __init__(self, params: Any) -> None:
            super().__init__(params, lr=0.0)
            self.steps: list[list[Any]] = []

        def step(self, closure: Any = None) -> Any:
            grads = [p.grad.detach().clone() for g in self.param_groups for p in g["params"]]
            self.steps.append(grads)
            return super().step(closure)

    return Recording([p for p in model.parameters() if p.requires_grad])


def _loop(model, optimizer, features, hooks=None, resume_from=None, outputs=None, **train) -> Any:
    """The GPT-2 features' labels are shifted by one in the loss (causal)."""
    from accelerate import Accelerator

    from finetune.train.loop import LoopHooks, LoopOutputs

    cfg = TrainConfig(
        **{"max_grad_norm": None, "warmup_fraction": 0.0, "group_by_length": False, **train}
    )
    hooks = hooks or LoopHooks(evaluate=lambda step, epoch: {"step": step})
    outputs = outputs or LoopOutputs(progress=False)
    accelerator = Accelerator(cpu=True)
    data = ListDataset(features)
    return run_fit(
        model, optimizer, data, _collate, cfg, accelerator, hooks, outputs, resume_from, True
    )


# --------------------------------------------------------------------------- finding 1


@pytest.mark.parametrize("processes", [2, 3])
@pytest.mark.parametrize("n", [50, 49, 17, 9])
@pytest.mark.parametrize("group", [True, False])
def test_every_example_once_per_epoch_on_several_processes(processes, n, group):
    """Issue #9 finding 1: with N not a multiple of the batch, no process loses or repeats
    examples, and every process gets the same number of batches, the `len` the plan uses."""
    from finetune.train.batching import LengthGroupedBatchSampler

    lengths = [random.Random(i).randrange(3, 60) for i in range(n)]
    shards = [
        LengthGroupedBatchSampler(
            lengths, 4, seed=3, group_by_length=group, num_processes=processes, process_index=k
        )
        for k in range(processes)
    ]
    for epoch in range(12):
        seen: list[int] = []
        counts = set()
        for shard in shards:
            shard.current_epoch = epoch
            batches = list(shard)
            counts.add(len(batches))
            assert len(batches) == len(shard)
            assert all(batches), "an empty batch"
            assert all(len(b) <= 4 + 1 for b in batches)
            seen += [i for b in batches for i in b]
        assert sorted(seen) == list(range(n)), f"epoch {epoch}: examples lost or repeated"
        assert len(counts) == 1, f"processes get different batch counts {counts}"


def test_single_process_short_batch_is_last():
    """Issue #9 finding 1: the one short batch stays last (Accelerate assumes only the last
    batch can be short), whatever the shuffle."""
    from finetune.train.batching import LengthGroupedBatchSampler

    sampler = LengthGroupedBatchSampler([5 + i % 7 for i in range(50)], 8, seed=0)
    for epoch in range(20):
        sizes = [len(b) for b in sampler.batches(epoch)]
        assert sizes == [8] * 6 + [2], (epoch, sizes)


def test_loop_counts_steps_and_samples_exactly():
    """Issue #9 finding 1: a run's steps equal the plan and its samples count each row once."""
    model = _gpt2()
    result = _loop(
        model, _recording_optimizer(model), _causal_features([2] * 11), batch_size=4, epochs=2
    )
    assert result.global_step == 2 * 3
    assert result.samples == 2 * 11


# --------------------------------------------------------------------------- finding 2


def _flat(grads: list[Any]) -> Any:
    import torch

    return torch.cat([g.reshape(-1) for g in grads])


def test_grad_accum_weights_tokens_not_micro_batches():
    """Issue #9 finding 2: grad_accum=2 at batch 2 gives the gradients of one batch of 4 (the
    per-token mean over the whole step), and the last, partial window of an epoch is not divided
    by the full grad_accum."""
    import torch

    features = _causal_features([1, 2, 30, 28, 3, 25])  # very different target lengths
    model = _gpt2()
    accumulated = _recording_optimizer(model)
    _loop(model, accumulated, features, batch_size=2, grad_accum=2)
    whole = _recording_optimizer(model)
    _loop(model, whole, features, batch_size=4, grad_accum=1)
    assert len(accumulated.steps) == len(whole.steps) == 2
    for step, (a, b) in enumerate(zip(accumulated.steps, whole.steps)):
        a, b = _flat(a), _flat(b)
        assert torch.allclose(a, b, rtol=1e-4, atol=1e-6), (step, (a - b).abs().max())


def test_loop_loss_is_token_weighted():
    """Issue #9 findings 2 and 23: the logged train loss is the per-token mean over the step."""
    import torch

    features = _causal_features([1, 30, 2, 29])
    model = _gpt2()
    result = _loop(
        model, _recording_optimizer(model), features, batch_size=2, grad_accum=2, logging_steps=1
    )
    with torch.no_grad():
        want = model(**{k: v for k, v in _collate(features).items() if k != "idx"}).loss
    assert result.last_loss == pytest.approx(float(want), rel=1e-5)


# --------------------------------------------------------------------------- finding 23


class _StubCausalTask:
    """Per-example mean token losses, as every task's eval_batch returns them."""

    def model_kind(self) -> str:
        return "causal"

    def eval_batch(self, model, batch, predict):
        import torch

        logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
        logits, labels = logits[:, :-1], batch["labels"][:, 1:]
        flat = torch.nn.functional.cross_entropy(
            logits.transpose(1, 2), labels, ignore_index=IGNORE, reduction="none"
        )
        counts = (labels != IGNORE).sum(dim=1)
        return (flat.sum(dim=1) / counts).tolist(), None

    def metrics(self, predictions, examples):
        return {}


def test_eval_loss_is_token_weighted_like_train_loss():
    """Issue #9 finding 23: eval loss is the per-token mean over the split (the definition the
    train loss uses), not a mean of per-example means."""
    import torch
    from accelerate import Accelerator

    from finetune.train.evaluation import make_eval_loader, run_eval

    features = _causal_features([1, 30, 2, 29, 3])
    model = _gpt2()
    task = _StubCausalTask()
    task.collate = _collate
    accelerator = Accelerator(cpu=True)
    loader = make_eval_loader(ListDataset(features), task, 2, accelerator)
    metrics, _ = run_eval(model, task, loader, [None] * len(features), accelerator, predict=False)
    with torch.no_grad():
        want = model(**{k: v for k, v in _collate(features).items() if k != "idx"}).loss
    assert metrics["loss"] == pytest.approx(float(want), rel=1e-5)


# --------------------------------------------------------------------------- finding 7


@pytest.mark.parametrize("kind", ["ia3", "dora"])
def test_weight_decay_spares_ia3_vectors_and_dora_magnitudes(kind):
    """Issue #9 finding 7: IA3 vectors (start at 1) and DoRA magnitudes (start at ||W||) are not
    pulled toward zero; LoRA A/B and the head are decayed."""
    from peft import IA3Config, LoraConfig, get_peft_model
    from transformers import BertForSequenceClassification

    from finetune.methods import METHODS
    from finetune.train.optim import build_optimizer

    base = BertForSequenceClassification(_bert_config())
    if kind == "ia3":
        config = IA3Config(
            task_type="SEQ_CLS",
            target_modules=["key", "value", "output.dense"],
            feedforward_modules=["output.dense"],
        )
    else:
        config = LoraConfig(task_type="SEQ_CLS", r=2, target_modules=["query"], use_dora=True)
    model = get_peft_model(base, config)
    no_decay = METHODS[kind].no_decay  # what the method declares its own start away from 0
    optimizer = build_optimizer(model, TrainConfig(weight_decay=0.1, lr=1e-3), no_decay=no_decay)
    decay_of = {id(p): g["weight_decay"] for g in optimizer.param_groups for p in g["params"]}
    named = {n: p for n, p in model.named_parameters() if p.requires_grad}
    special = [n for n in named if "ia3_l" in n or "lora_magnitude_vector" in n]
    assert special
    for name in special:
        assert decay_of[id(named[name])] == 0.0, name
    decayed = [n for n in named if decay_of[id(named[n])] > 0]
    assert any("classifier" in n and n.endswith("weight") for n in decayed)
    if kind == "dora":
        assert any("lora_A" in n for n in decayed) and any("lora_B" in n for n in decayed)


@pytest.mark.parametrize("optimizer_name", ["adamw", "loraplus"])
def test_adamw_is_fused_and_steps_as_the_loop_does(optimizer_name):
    """On a CPU torch's AdamW loops over the tensors unless told otherwise; ours runs the fused
    kernel (the Trainer's default too), with the loop's update to float precision."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import BertForSequenceClassification

    from finetune.train.optim import build_optimizer

    torch.manual_seed(0)
    base = BertForSequenceClassification(_bert_config())
    model = get_peft_model(base, LoraConfig(task_type="SEQ_CLS", r=2, target_modules=["query"]))
    cfg = TrainConfig(weight_decay=0.1, lr=1e-2, optimizer=optimizer_name)
    optimizer = build_optimizer(model, cfg)
    assert optimizer.defaults["fused"] is True
    trained = [p for p in model.parameters() if p.requires_grad]
    twins = [p.detach().clone().requires_grad_() for p in trained]
    groups = [
        {"lr": g["lr"], "weight_decay": g["weight_decay"],
         "params": [twins[next(i for i, t in enumerate(trained) if t is p)] for p in g["params"]]}
        for g in optimizer.param_groups
    ]  # fmt: skip
    loop = torch.optim.AdamW(groups, foreach=False)
    assert loop.param_groups[0]["fused"] is None
    for _ in range(3):
        for ours, theirs in zip(trained, twins):
            ours.grad = torch.randn_like(ours)
            theirs.grad = ours.grad.clone()
        optimizer.step()
        loop.step()
    for ours, theirs in zip(trained, twins):
        torch.testing.assert_close(ours.detach(), theirs.detach(), atol=1e-6, rtol=1e-5)


def test_adamw_leaves_parameters_it_cannot_fuse_to_torch():
    """Parameters off CPU/CUDA, and runs whose parameters FSDP or DeepSpeed will replace."""
    import torch

    from finetune.train.adamw import adamw

    plain = adamw([{"params": [torch.nn.Parameter(torch.zeros(2))]}], 1e-3)
    meta = adamw([{"params": [torch.nn.Parameter(torch.zeros(2, device="meta"))]}], 1e-3)
    sharded = adamw([{"params": [torch.nn.Parameter(torch.zeros(2))]}], 1e-3, fused=False)
    assert plain.defaults["fused"] is True
    assert meta.defaults["fused"] is None
    assert sharded.defaults["fused"] is None  # FSDP / DeepSpeed runs: torch's own choice


# --------------------------------------------------------------------------- finding 8


@pytest.mark.parametrize("dtype", ["bfloat16", "float16"])
def test_half_precision_checkpoint_loads_in_fp32(tmp_path, dtype):
    """Issue #9 finding 8: a checkpoint stored in bf16/fp16 trains fp32 parameters (autocast
    does mixed precision), whatever its stored dtype."""
    import torch
    from transformers import BertForSequenceClassification

    from finetune.models.detect import architecture_named
    from finetune.models.loading import load_base_model, load_tokenizer
    from finetune.models.names import resolve_name
    from tests.tiny_models import build_bert

    path = build_bert(tmp_path / "bert")
    model = BertForSequenceClassification.from_pretrained(path)
    model.to(getattr(torch, dtype)).save_pretrained(path)
    tokenizer = load_tokenizer(str(path))
    resolved = resolve_name(str(path))
    family = architecture_named("bert")
    loaded = load_base_model(resolved, family, "classification", tokenizer)
    dtypes = {p.dtype for p in loaded.model.parameters()}
    assert dtypes == {torch.float32}, dtypes


# --------------------------------------------------------------------------- finding 12


def test_eval_and_save_once_per_step_on_epoch_ends(tmp_path, monkeypatch):
    """Issue #9 finding 12: eval_steps / save_steps landing on an epoch end evaluate and save
    that step once (the same step saved twice crashed several processes)."""
    import finetune.train.loop as train
    from finetune.train.loop import LoopHooks, LoopOutputs

    saved: list[int] = []
    original = train.save_checkpoint

    def spy(accelerator, directory, state, keep):
        saved.append(state.global_step)
        return original(accelerator, directory, state, keep)

    monkeypatch.setattr(train, "save_checkpoint", spy)
    evaluated: list[int] = []
    hooks = LoopHooks(evaluate=lambda step, epoch: evaluated.append(step) or {"step": step})
    outputs = LoopOutputs(checkpoint_dir=tmp_path / "checkpoints", progress=False)
    model = _gpt2()
    # 8 rows at batch 2: 4 steps an epoch, 3 epochs; every 2nd step lands on each epoch end
    _loop(
        model,
        _recording_optimizer(model),
        _causal_features([2] * 8),
        hooks=hooks,
        outputs=outputs,
        batch_size=2,
        epochs=3,
        eval_steps=2,
        save_steps=2,
        keep_checkpoints=10,
    )
    assert len(evaluated) == len(set(evaluated)), evaluated
    assert len(saved) == len(set(saved)), saved
    assert set(evaluated) >= {2, 4, 6, 8, 10}
    assert set(saved) >= {2, 4, 6, 8, 10}


# --------------------------------------------------------------------------- finding 15


class _Diverging:
    """A tiny model whose loss becomes NaN from its `bad`-th forward on."""

    def __new__(cls, bad: int) -> Any:
        import torch

        class Model(torch.nn.Module):
            def __init__(self) -> None:
                super().__init__()
                self.w = torch.nn.Parameter(torch.ones(3))
                self.calls = 0

            def forward(self, input_ids, attention_mask, labels):
                self.calls += 1
                loss = (self.w.sum() - 1.0) ** 2 + 0 * input_ids.sum()
                if self.calls >= bad:
                    loss = loss * float("nan")
                return type("Out", (), {"loss": loss})()

        return Model()


def _scalar_collate(rows: list[dict[str, Any]]) -> dict[str, Any]:
    import torch

    return {
        "input_ids": torch.tensor([r["input_ids"] for r in rows]),
        "attention_mask": torch.ones(len(rows), 2, dtype=torch.long),
        "labels": torch.tensor([r["labels"] for r in rows]),
        "idx": torch.tensor([r["idx"] for r in rows]),
    }


def _diverging_run(tmp_path, cfg: TrainConfig, bad: int, spy: list[int] | None = None):
    import torch
    from accelerate import Accelerator

    from finetune.train import loop
    from finetune.train.loop import LoopHooks, LoopOutputs

    model = _Diverging(bad=bad)
    hooks = LoopHooks(evaluate=lambda step, epoch: {"step": step})
    outputs = LoopOutputs(tmp_path / "log.jsonl", tmp_path / "checkpoints", progress=False)
    features = [{"input_ids": [1, 2], "labels": 0, "idx": i, "length": 2} for i in range(20)]

    settle = loop._Loop.settle

    def counted(self):
        if spy is not None and self.pending:
            spy.append(self.state.global_step)
        settle(self)

    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(loop._Loop, "settle", counted)
        data = ListDataset(features)
        accelerator = Accelerator(cpu=True)
        return run_fit(model, optimizer, data, _scalar_collate, cfg, accelerator, hooks, outputs)


def test_losses_are_read_back_only_at_log_eval_and_checkpoint_steps(tmp_path):
    """A host sync per step leaves a GPU idle while Python queues the next step: the loop
    reads losses back at log lines (every 5), evaluations (epoch ends, every 10) and the end,
    in one transfer each, and still logs exact per-step-weighted losses and sample counts."""
    cfg = TrainConfig(
        batch_size=1, epochs=2, lr=0.1, warmup_fraction=0.0, group_by_length=False,
        logging_steps=5,
    )  # fmt: skip
    reads: list[int] = []
    result = _diverging_run(tmp_path, cfg, bad=10**9, spy=reads)
    assert reads == [5, 10, 15, 20, 25, 30, 35, 40]
    assert result.samples == 40 and result.global_step == 40
    logged = [json.loads(x) for x in (tmp_path / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in logged] == [5, 10, 15, 20, 25, 30, 35, 40]
    assert [r["samples"] for r in logged] == [5, 10, 15, 20, 25, 30, 35, 40]


def test_pending_losses_are_bounded_whatever_the_logging_interval(tmp_path, monkeypatch):
    """With logging far apart, at most MAX_PENDING steps wait on the device: a long epoch
    never piles up device tensors."""
    from finetune.train import loop

    monkeypatch.setattr(loop, "MAX_PENDING", 3)
    cfg = TrainConfig(
        batch_size=1, epochs=1, lr=0.1, warmup_fraction=0.0, group_by_length=False,
        logging_steps=1000,
    )  # fmt: skip
    reads: list[int] = []
    result = _diverging_run(tmp_path, cfg, bad=10**9, spy=reads)
    assert reads == [3, 6, 9, 12, 15, 18, 20]
    assert result.samples == 20


def test_non_finite_loss_between_log_lines_names_its_step_and_writes_no_checkpoint(tmp_path):
    """Losses read back late still name the step where the loss first became NaN (step 4,
    with the learning rate it ran at), and the epoch-end checkpoint after it is never
    written: the read-back comes first."""
    from finetune.errors import NonFiniteLossError
    from finetune.train.checkpoints import latest_checkpoint

    cfg = TrainConfig(
        batch_size=1, epochs=1, lr=0.1, warmup_fraction=0.0, group_by_length=False,
        logging_steps=50,
    )  # fmt: skip
    with pytest.raises(NonFiniteLossError) as caught:
        _diverging_run(tmp_path, cfg, bad=4)
    # linear decay over 20 steps: step 4 ran at 0.1 * (1 - 3/20)
    assert "at step 4 " in caught.value.message and "lr 8.50e-02" in caught.value.message
    assert "no checkpoint was written yet" in caught.value.message
    assert latest_checkpoint(tmp_path / "checkpoints") is None


def test_non_finite_loss_is_a_user_error_and_keeps_last_good_checkpoint(tmp_path):
    """Issue #9 finding 15: a NaN loss is a user error (its own code, exit 2) naming the step,
    the learning rate and likely causes; the last good checkpoint stays."""
    import torch

    from finetune.errors import NonFiniteLossError
    from finetune.train.checkpoints import latest_checkpoint
    from finetune.train.loop import LoopHooks, LoopOutputs

    model = _Diverging(bad=4)
    hooks = LoopHooks(evaluate=lambda step, epoch: {"step": step})
    outputs = LoopOutputs(checkpoint_dir=tmp_path / "checkpoints", progress=False)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    features = [{"input_ids": [1, 2], "labels": 0, "idx": i, "length": 2} for i in range(10)]

    from accelerate import Accelerator

    cfg = TrainConfig(
        batch_size=1, epochs=1, save_steps=1, lr=0.1, warmup_fraction=0.0, group_by_length=False
    )
    with pytest.raises(NonFiniteLossError) as caught:
        data = ListDataset(features)
        accelerator = Accelerator(cpu=True)
        run_fit(model, optimizer, data, _scalar_collate, cfg, accelerator, hooks, outputs)
    error = caught.value
    assert error.exit_code == 2 and error.code != "E000"
    assert "step 4" in error.message and "lr" in error.message
    assert "train.lr" in error.fix
    last = latest_checkpoint(tmp_path / "checkpoints")
    assert last is not None and last.name == "step-00000003"
    assert str(last) in error.message
    state = json.loads((last / "trainer_state.json").read_text())
    assert state["global_step"] == 3


# --------------------------------------------------------------------------- finding 17


def test_resume_keeps_the_whole_runs_train_seconds(tmp_path):
    """Issue #9 finding 17: after --resume, train_seconds covers the whole run (stored in the
    checkpoint), so samples/s is not inflated."""
    from finetune.train.checkpoints import latest_checkpoint
    from finetune.train.loop import LoopOutputs

    outputs = LoopOutputs(checkpoint_dir=tmp_path / "checkpoints", progress=False)
    features = _causal_features([2] * 8)
    model = _gpt2()
    _loop(
        model,
        _recording_optimizer(model),
        features,
        outputs=outputs,
        batch_size=2,
        max_steps=3,
        save_steps=2,
    )
    last = latest_checkpoint(tmp_path / "checkpoints")
    state_path = last / "trainer_state.json"
    state = json.loads(state_path.read_text())
    assert "train_seconds" in state
    state["train_seconds"] = 5000.0  # as if the first part had trained for a long time
    state_path.write_text(json.dumps(state))
    model = _gpt2()
    result = _loop(
        model,
        _recording_optimizer(model),
        features,
        outputs=outputs,
        batch_size=2,
        max_steps=4,
        resume_from=last,
    )
    assert result.samples == 8
    assert result.train_seconds >= 5000.0
    assert result.samples_per_second == pytest.approx(8 / result.train_seconds)


# --------------------------------------------------------------------------- finding 18


def test_final_evaluation_runs_once(tmp_path, tiny_model_dir, sentiment_files, monkeypatch):
    """Issue #9 finding 18: the weights after the last step are evaluated once, not twice."""
    import finetune.commands.run as command
    import finetune.pipeline.training as pipeline
    from tests.conftest import classification_recipe, count_calls, write_recipe

    calls = count_calls(monkeypatch, pipeline, "run_eval")
    train, dev = sentiment_files
    # select_best off: keeping an earlier evaluation's weights evaluates those once more
    # (tests/test_best_and_curves.py)
    data = classification_recipe(
        tiny_model_dir("bert"),
        train,
        dev,
        tmp_path / "run",
        {"name": "lora"},
        epochs=2,
        select_best=False,
    )
    command.run(write_recipe(tmp_path / "r.yaml", data), progress=False)
    records = [json.loads(x) for x in (tmp_path / "run" / "log.jsonl").read_text().splitlines()]
    eval_steps = [r["step"] for r in records if "eval_loss" in r]
    assert len(eval_steps) == len(set(eval_steps)) == 2, eval_steps
    assert len(calls) == 2
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    last = [r for r in records if "eval_loss" in r][-1]
    assert last["eval_loss"] == pytest.approx(metrics["loss"])
