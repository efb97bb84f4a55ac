"""`train.compile`: when auto compiles, what gets compiled (the transformer blocks, in place:
parameter names and saves unchanged), evaluation runs eagerly, the same training arithmetic
as eager to float tolerance, and the compiled code cached for the next run."""

from __future__ import annotations

import json

import pytest

from finetune.train.compiled import (
    COLD_PAYBACK_STEPS,
    WARM_PAYBACK_STEPS,
    compile_dir,
    eager,
    is_warm,
    mark_warm,
    plan_compile,
)


@pytest.fixture()
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("FINETUNE_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", str(tmp_path / "cache" / "compile" / "inductor"))
    return tmp_path / "cache"


def test_auto_compiles_only_when_it_pays_back(cache):
    assert plan_compile(True, 5, "k").enabled and not plan_compile(False, 10**6, "k").enabled
    cold = plan_compile("auto", COLD_PAYBACK_STEPS - 1, "k", "cuda")
    assert not cold.enabled and "train.compile=true" in cold.why  # says how to warm the cache
    assert plan_compile("auto", COLD_PAYBACK_STEPS, "k", "cuda").enabled
    mark_warm(plan_compile(True, 5, "k"))
    assert is_warm("k") and not is_warm("other")
    warm = plan_compile("auto", WARM_PAYBACK_STEPS, "k", "cuda")
    assert warm.enabled and "cached" in warm.why
    assert not plan_compile("auto", WARM_PAYBACK_STEPS - 1, "k", "cuda").enabled
    assert (compile_dir() / "finetune-warm" / "k.json").is_file()
    # on a CPU, where the compiled step measured no faster, auto never compiles, warm or not
    for steps in (WARM_PAYBACK_STEPS, COLD_PAYBACK_STEPS * 100):
        cpu = plan_compile("auto", steps, "k", "cpu")
        assert not cpu.enabled and "CPU" in cpu.why


def _lora_bert(tiny_model_dir):
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForSequenceClassification

    torch.manual_seed(0)
    model = AutoModelForSequenceClassification.from_pretrained(
        str(tiny_model_dir("bert")), num_labels=2, hidden_dropout_prob=0.0,
        attention_probs_dropout_prob=0.0,
    )  # fmt: skip
    config = LoraConfig(task_type="SEQ_CLS", r=4, target_modules=["query", "value"])
    return get_peft_model(model, config)


def test_blocks_are_chosen_in_place_and_eager_restores_them(tiny_model_dir):
    from finetune.train.compiled import compiled_blocks

    model = _lora_bert(tiny_model_dir)
    blocks = compiled_blocks(model)
    assert [type(b).__name__ for b in blocks] == ["BertLayer"] * 2  # not BertEmbeddings
    keys = set(model.state_dict())
    for block in blocks:
        block.compile(dynamic=True)
    assert set(model.state_dict()) == keys  # no _orig_mod: saves and checkpoints unchanged
    with eager(model):
        assert all(b._compiled_call_impl is None for b in blocks)
    assert all(b._compiled_call_impl is not None for b in blocks)


@pytest.mark.slow
def test_compiled_steps_match_eager_steps(tiny_model_dir, cache):
    import torch

    from finetune.train.compiled import CompilePlan, compile_model

    torch.manual_seed(0)
    ids = torch.randint(5, 60, (4, 12))
    lengths = [(ids[:, :n], torch.tensor([0, 1, 1, 0])) for n in (12, 7, 9)]

    def losses(compiled: bool) -> list[float]:
        model = _lora_bert(tiny_model_dir)
        if compiled:
            assert compile_model(model, CompilePlan(True, "test", "k")) == 2
        optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], 1e-2)
        out = []
        for batch, labels in lengths:  # three lengths: one dynamic graph, no recompile needed
            loss = model(input_ids=batch, labels=labels).loss
            loss.backward()
            optimizer.step()
            optimizer.zero_grad()
            out.append(float(loss.detach()))
        return out

    assert losses(True) == pytest.approx(losses(False), rel=1e-4, abs=1e-5)
    assert any((cache / "compile" / "inductor").rglob("*"))  # the compiled code is cached


@pytest.mark.slow
def test_compiled_run_saves_reloads_and_warms_the_cache(
    tmp_path, runner, tiny_model_dir, sentiment_files, cache, caplog
):
    from finetune.cli import app
    from tests.conftest import classification_recipe, write_recipe

    train, dev = sentiment_files
    data = classification_recipe(
        tiny_model_dir("bert"), train, dev, tmp_path / "run", {"name": "lora"}, epochs=1
    )
    data["train"]["compile"] = True
    recipe = write_recipe(tmp_path / "r.yaml", data)
    result = runner.invoke(app, ["run", str(recipe), "--no-progress"])
    assert result.exit_code == 0, result.output
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert list((compile_dir() / "finetune-warm").glob("*.json"))
    again = runner.invoke(app, ["eval", str(tmp_path / "run")])
    assert again.exit_code == 0, again.output
    evaluated = json.loads((tmp_path / "run" / "eval_eval.json").read_text())
    assert evaluated["accuracy"] == pytest.approx(metrics["accuracy"])
    from finetune.commands.run import run

    data["train"]["compile"] = "auto"
    data["output"]["dir"] = str(tmp_path / "again")
    import logging

    logging.getLogger().addHandler(caplog.handler)  # the CLI runs above replaced the handlers
    with caplog.at_level("INFO"):
        run(write_recipe(tmp_path / "r2.yaml", data), progress=False)
    text = caplog.text
    assert "train.compile: off" in text and "on a CPU" in text  # auto never compiles on a CPU


@pytest.mark.slow
def test_compiled_two_processes_train_like_eager_two_processes(
    tmp_path, tiny_model_dir, sentiment_files
):
    """Under torchrun (two gloo ranks) each rank compiles its blocks (one shared cache) and the
    run trains as the eager two-process run does: same steps, losses to float tolerance."""
    import os
    import subprocess

    from tests.conftest import REPO, deterministic_lora_recipe, write_recipe
    from tests.test_multiprocess import _torchrun

    train, dev = sentiment_files
    env = {
        **os.environ,
        "OMP_NUM_THREADS": "1",
        "PYTHONPATH": str(REPO),
        "FINETUNE_CACHE_DIR": str(tmp_path / "cache"),
        "TORCHINDUCTOR_CACHE_DIR": str(tmp_path / "cache" / "compile" / "inductor"),
    }
    logs = {}
    for name, compiled, port in (("eager", False, "29541"), ("compiled", True, "29542")):
        data = deterministic_lora_recipe(tiny_model_dir, train, dev, tmp_path / name, batch_size=8)
        data["train"]["compile"] = compiled
        recipe = write_recipe(tmp_path / f"{name}.yaml", data)
        cmd = [*_torchrun(), "--nproc_per_node", "2", "--master_port", port]
        cmd += ["-m", "finetune", "run", str(recipe), "--no-progress"]
        done = subprocess.run(
            cmd, capture_output=True, text=True, env=env, cwd=tmp_path, timeout=900
        )
        assert done.returncode == 0, done.stderr[-3000:]
        warm = list((tmp_path / "cache" / "compile" / "finetune-warm").glob("*.json"))
        assert bool(warm) == compiled  # the compiled run marked its graphs cached
        rows = (tmp_path / name / "log.jsonl").read_text().splitlines()
        logs[name] = [json.loads(r)["loss"] for r in rows if "loss" in json.loads(r)]
    assert len(logs["eager"]) == len(logs["compiled"]) >= 3
    assert logs["compiled"] == pytest.approx(logs["eager"], rel=1e-3, abs=1e-4)
