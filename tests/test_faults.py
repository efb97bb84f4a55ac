"""Issue #13: surviving faults, on a tiny BERT classifier *with dropout* driven through `fit`.

Exact resume (per-step losses and final weights equal the uninterrupted run's), evaluation
that never moves training's random stream, SIGTERM / Ctrl-C stopping at a step boundary with a
checkpoint, a second signal quitting at once, checkpoints that are verified before any weight
loads, and `--resume` refusing a changed recipe or data. The CLI-level and kill -9 tests are in
test_faults_cli.py; real-MiniLM ones in test_faults_real.py.
"""

from __future__ import annotations

import json
import os
import random
import signal
from pathlib import Path
from typing import Any

import pytest

from finetune.recipe.sections import TrainConfig
from finetune.train.batching import ListDataset

VOCAB = 30


def _model(seed: int) -> Any:
    import torch
    from transformers import BertConfig, BertForSequenceClassification

    torch.manual_seed(seed)
    config = BertConfig(
        vocab_size=VOCAB,
        hidden_size=16,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=32,
        max_position_embeddings=32,
        num_labels=2,
        hidden_dropout_prob=0.1,
        attention_probs_dropout_prob=0.1,
        classifier_dropout=0.1,
    )
    return BertForSequenceClassification(config)


def _features(n: int = 22) -> list[dict[str, Any]]:
    rng = random.Random(5)
    rows = []
    for i in range(n):
        ids = [rng.randrange(1, VOCAB) for _ in range(rng.randrange(3, 12))]
        rows.append({"input_ids": ids, "labels": int(ids[0] % 2), "idx": i, "length": len(ids)})
    return rows


def _collate(features: list[dict[str, Any]]) -> dict[str, Any]:
    import torch

    width = max(len(f["input_ids"]) for f in features)
    ids = torch.zeros((len(features), width), dtype=torch.long)
    mask = torch.zeros_like(ids)
    for row, feat in enumerate(features):
        ids[row, : len(feat["input_ids"])] = torch.tensor(feat["input_ids"])
        mask[row, : len(feat["input_ids"])] = 1
    labels = torch.tensor([f["labels"] for f in features])
    return {"input_ids": ids, "attention_mask": mask, "labels": labels, "idx": labels}


def _greedy_eval(calls: list[int], on_call: Any = None) -> Any:
    """An evaluation that draws from every global generator, as a careless one might."""

    def evaluate(step: int, epoch: int) -> dict[str, Any]:
        import numpy as np
        import torch

        calls.append(step)
        torch.rand(7)
        random.random()
        np.random.rand(3)
        if on_call is not None:
            on_call(step)
        return {"step": step}

    return evaluate


def _fit(tmp: Path, *, init_seed: int = 0, resume: Path | None = None, **opts: Any) -> Any:
    """Train (or resume) the tiny classifier; returns (result, model, hooks)."""
    import torch
    from accelerate import Accelerator
    from accelerate.utils import set_seed

    from finetune.train.loop import LoopHooks, fit

    calls: list[int] = opts.pop("calls", [])
    on_call = opts.pop("on_call", None)
    stop = opts.pop("stop", None)
    tmp.mkdir(parents=True, exist_ok=True)
    set_seed(0)
    model = _model(init_seed)
    optimizer = torch.optim.AdamW(model.parameters(), lr=5e-3)
    cfg = TrainConfig(
        **{"batch_size": 4, "epochs": 2, "logging_steps": 1, "warmup_fraction": 0.0, **opts}
    )
    hooks = LoopHooks(
        evaluate=_greedy_eval(calls, on_call),
        log_path=tmp / "log.jsonl",
        checkpoint_dir=tmp / "checkpoints",
        progress=False,
        model_kind="classification",
        stop=stop,
        fingerprint={"recipe": {"train.lr": 5e-3}},
    )
    accelerator = Accelerator(cpu=True)
    prepared, optimizer = accelerator.prepare(model, optimizer)
    result = fit(
        prepared, optimizer, ListDataset(_features()), _collate, cfg, accelerator, hooks, resume
    )
    return result, model, hooks


def _losses(tmp: Path) -> list[tuple[int, float]]:
    records = [json.loads(line) for line in (tmp / "log.jsonl").read_text().splitlines()]
    return [(r["step"], r["loss"]) for r in records if "loss" in r]


def _same_weights(a: Any, b: Any) -> None:
    import torch

    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    for key in sa:
        assert torch.allclose(sa[key], sb[key], atol=1e-6, rtol=0), key


class _Interrupt(Exception):
    pass


# --------------------------------------------------------------------------- exact resume


def test_evaluations_never_change_training(tmp_path):
    """Evaluation at every step (drawing from torch, Python and NumPy generators) leaves the
    training losses and weights exactly those of a run that never evaluates."""
    calls: list[int] = []
    _, evaluated, _ = _fit(tmp_path / "a", eval_steps=1, calls=calls)
    _, plain, _ = _fit(tmp_path / "b", eval_steps=None)
    assert len(calls) > 5
    assert _losses(tmp_path / "a") == _losses(tmp_path / "b")
    _same_weights(evaluated, plain)


@pytest.mark.parametrize("save_steps", [2, 3, 4])
def test_resume_after_a_crash_is_exact_with_dropout(tmp_path, monkeypatch, save_steps):
    """Crash right after a mid-epoch (2, 3) or epoch-end (epoch of 6 steps: 6 is a multiple of
    2 and 3; 4 is mid-epoch in both epochs) checkpoint, then resume into a model initialised
    differently: per-step losses and final weights equal the uninterrupted run's."""
    import finetune.train.loop as loop_module

    _, straight, _ = _fit(tmp_path / "straight", save_steps=save_steps, eval_steps=2)
    original = loop_module.save_checkpoint

    def crash_after_first(*args: Any, **kwargs: Any) -> Any:
        path = original(*args, **kwargs)
        if path is not None and path.name == f"step-{save_steps:08d}":
            raise _Interrupt
        return path

    monkeypatch.setattr(loop_module, "save_checkpoint", crash_after_first)
    run = tmp_path / "resumed"
    with pytest.raises(_Interrupt):
        _fit(run, save_steps=save_steps, eval_steps=2)
    monkeypatch.setattr(loop_module, "save_checkpoint", original)
    from finetune.run.resume import trim_log
    from finetune.train.checkpoints import latest_checkpoint

    last = latest_checkpoint(run / "checkpoints")
    trim_log(run / "log.jsonl", save_steps)
    _, resumed, _ = _fit(run, init_seed=99, resume=last, save_steps=save_steps, eval_steps=2)
    assert _losses(run) == _losses(tmp_path / "straight")
    _same_weights(resumed, straight)


def test_sigterm_stops_after_the_step_and_resumes_exactly(tmp_path):
    """SIGTERM during step 2's evaluation: the loop finishes step 3, checkpoints it and raises
    TrainingStopped; resumed into a model initialised differently, the run ends with the
    uninterrupted run's per-step losses, evaluations and weights."""
    from finetune.train.signals import TrainingStopped, stop_on_signals

    straight_calls: list[int] = []
    _, straight, _ = _fit(tmp_path / "straight", eval_steps=2, calls=straight_calls)
    run = tmp_path / "stopped"
    calls: list[int] = []

    def terminate_during_eval_2(step: int) -> None:
        if step == 2:
            os.kill(os.getpid(), signal.SIGTERM)

    with stop_on_signals() as stop, pytest.raises(TrainingStopped) as stopped:
        _fit(run, eval_steps=2, calls=calls, on_call=terminate_during_eval_2, stop=stop)
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL  # handlers restored
    assert (stopped.value.signal_name, stopped.value.step) == ("SIGTERM", 3)
    assert stopped.value.checkpoint == run / "checkpoints" / "step-00000003"
    _, resumed, _ = _fit(
        run, init_seed=7, resume=stopped.value.checkpoint, eval_steps=2, calls=calls
    )
    assert calls == straight_calls
    assert _losses(run) == _losses(tmp_path / "straight")
    _same_weights(resumed, straight)


def test_stop_at_an_evaluation_step_leaves_the_evaluation_to_the_resumed_run(tmp_path):
    """Ctrl-C during step 2's evaluation (evaluations every step): step 3 is finished and
    checkpointed without its evaluation, which the resumed run runs first; every step is
    evaluated once and the losses equal an uninterrupted run's."""
    from finetune.train.checkpoints import TrainState
    from finetune.train.signals import TrainingStopped, stop_on_signals

    straight_calls: list[int] = []
    _, straight, _ = _fit(tmp_path / "straight", eval_steps=2, calls=straight_calls)
    run = tmp_path / "stopped"
    calls: list[int] = []

    def interrupt_at_2(step: int) -> None:
        if step == 2:
            os.kill(os.getpid(), signal.SIGINT)

    with stop_on_signals() as stop, pytest.raises(TrainingStopped) as stopped:
        # evaluations every step: the signal during step 2's arrives before step 3, which is
        # then finished and checkpointed with its evaluation pending
        _fit(run, eval_steps=1, calls=calls, on_call=interrupt_at_2, stop=stop)
    assert (stopped.value.signal_name, stopped.value.step) == ("SIGINT", 3)
    assert calls == [1, 2]
    state = TrainState.read(stopped.value.checkpoint)
    assert state.eval_pending_epoch == 0 and state.global_step == 3
    _, resumed, _ = _fit(
        run, init_seed=3, resume=stopped.value.checkpoint, eval_steps=1, calls=calls
    )
    assert calls == list(range(1, 12))  # 3 evaluated once, on resume; 12 is the pipeline's
    assert [s for s, _ in _losses(run)] == list(range(1, 13))
    assert _losses(run) == _losses(tmp_path / "straight")
    _same_weights(resumed, straight)


def test_keep_one_checkpoint_leaves_exactly_one_after_a_stop(tmp_path):
    from finetune.train.signals import TrainingStopped, stop_on_signals

    run = tmp_path / "run"

    def terminate(step: int) -> None:
        if step == 4:
            os.kill(os.getpid(), signal.SIGTERM)

    with stop_on_signals() as stop, pytest.raises(TrainingStopped):
        _fit(run, eval_steps=1, save_steps=2, keep_checkpoints=1, on_call=terminate, stop=stop)
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["step-00000005"]


def test_stop_on_the_last_step_resumes_to_nothing_left_to_train(tmp_path):
    """A stop agreed after the last step checkpoints that step; resuming trains nothing more
    and ends with the uninterrupted weights (the pipeline then runs the final evaluation)."""
    from finetune.train.signals import StopRequest, TrainingStopped

    class StopAt(StopRequest):
        def __init__(self, step: int) -> None:
            super().__init__()
            self.step, self.seen = step, 0

        def agreed(self, accelerator: Any) -> str | None:
            self.seen += 1
            return "SIGTERM" if self.seen == self.step else None

    _, straight, _ = _fit(tmp_path / "straight", epochs=1)
    run = tmp_path / "run"
    with pytest.raises(TrainingStopped) as stopped:
        _fit(run, epochs=1, stop=StopAt(6))
    assert (stopped.value.step, stopped.value.total) == (6, 6)
    result, resumed, _ = _fit(run, init_seed=4, epochs=1, resume=stopped.value.checkpoint)
    assert result.global_step == 6 and result.samples == 22
    _same_weights(resumed, straight)
