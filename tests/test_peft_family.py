"""The peft tuners beyond LoRA: AdaLoRA's rank schedule through the loop's method hook, LN
tuning's norm layers, the GPT-2 refusals staying true, and `compare`'s method groups.

(Training, saving, reloading and merging every one of them on every family and task is
tests/test_methods_matrix.py's job.)
"""

from __future__ import annotations

import itertools
import json

import pytest

from finetune.cli import app
from finetune.methods import METHODS
from tests.conftest import classification_recipe, write_recipe
from tests.test_methods import batch, ctx_for, load, method_config

ADALORA = {"name": "adalora", "init_r": 6, "target_r": 2, "warmup": 0.2, "final": 0.2}


def test_adalora_budget_shrinks_on_schedule_through_the_step_hook(
    tmp_path, runner, tiny_model_dir, sentiment_files, monkeypatch
):
    """The loop calls the method's hook once per optimizer step, 1-based, while the gradients
    exist; the number of live singular values follows AdaLoRA's budget: the full init_r per
    layer through the warm-up, then down to target_r per layer, which the saved adapter keeps."""
    from finetune.methods.adalora import AdaLoraSteps

    calls: list[tuple[int, bool, int]] = []
    original = AdaLoraSteps.__call__

    def spy(self, step):
        params = dict(self.tuner.model.named_parameters())
        has_grads = any(p.grad is not None for n, p in params.items() if "lora_E" in n)
        original(self, step)
        live = sum(int((p != 0).sum()) for n, p in params.items() if "lora_E" in n)
        calls.append((step, has_grads, live))

    monkeypatch.setattr(AdaLoraSteps, "__call__", spy)
    train, dev = sentiment_files
    data = classification_recipe(
        tiny_model_dir("bert"), train, dev, tmp_path / "run", ADALORA, epochs=1, max_steps=20
    )
    result = runner.invoke(
        app, ["run", str(write_recipe(tmp_path / "r.yaml", data)), "--no-progress"]
    )
    assert result.exit_code == 0, result.output
    layers = 4  # query and value in 2 layers
    assert [c[0] for c in calls] == list(range(1, 21)) and all(c[1] for c in calls)
    live = [c[2] for c in calls]
    # warm-up: 20% of 20 steps at the initial rank (step 1 trains at lr 0: E stays at 0)
    assert live[1:4] == [6 * layers] * 3
    budgeting = live[4:16]
    assert all(a >= b for a, b in itertools.pairwise(budgeting))  # the budget only shrinks
    assert live[-1] == 2 * layers  # target_r per layer at the end
    config = json.loads((tmp_path / "run" / "adapter" / "adapter_config.json").read_text())
    kept = sum(sum(bool(x) for x in ranks) for ranks in config["rank_pattern"].values())
    assert kept == 2 * layers and config["total_step"] == 20
    assert (config["tinit"], config["tfinal"]) == (4, 4)


def test_adalora_hook_state_round_trips(tiny_model_dir):
    """What a checkpoint keeps of the schedule (scores, ranks) comes back on --resume."""
    import torch

    from finetune.methods.adalora import AdaLoraSteps
    from finetune.methods.base import TrainingPlan

    loaded, tokenizer = load(tiny_model_dir, "bert")
    cfg = method_config("adalora", init_r=4, target_r=2)
    ctx = ctx_for(loaded, "bert", "classification", cfg)
    ctx.plan = TrainingPlan(10, lambda n: [])
    model = METHODS["adalora"].apply(loaded.model, ctx)
    hook = METHODS["adalora"].step_hook(model)
    assert isinstance(hook, AdaLoraSteps)
    inputs = {**batch(tokenizer, "classification"), "labels": torch.tensor([1, 0])}
    model(**inputs).loss.backward()
    hook(1)
    state = hook.state_dict()
    assert state["ipt"]
    fresh = AdaLoraSteps(model.base_model)
    model.base_model.rankallocator.reset_ipt()
    fresh.load_state_dict(state)
    assert model.base_model.rankallocator.ipt.keys() == state["ipt"].keys()


def test_adalora_refuses_a_schedule_with_no_budgeting_phase(tiny_model_dir):
    from finetune.errors import FinetuneError
    from finetune.methods.adalora import schedule

    cfg = method_config("adalora", warmup=0.5, final=0.5)
    with pytest.raises(FinetuneError, match="no step to reallocate"):
        schedule(cfg, 10)


@pytest.mark.parametrize(
    ("family", "kind", "norms"),
    [
        ("bert", "classification", ["LayerNorm"]),
        ("gpt2", "causal", ["ln_1", "ln_2", "ln_f"]),
        ("t5", "seq2seq", ["final_layer_norm", "layer_norm"]),
    ],
)
def test_ln_tuning_finds_every_norm_layer(family, kind, norms, tiny_model_dir):
    from finetune.methods.norms import norm_layers

    loaded, _ = load(tiny_model_dir, family, kind)
    assert norm_layers(loaded.model, list(loaded.new_modules)) == norms


def test_ln_tuning_leaves_bert2bert_cross_attention_to_modules_to_save(tiny_model_dir):
    loaded, _ = load(tiny_model_dir, "bert", "seq2seq")
    cfg = method_config("ln_tuning")
    model = METHODS["ln_tuning"].apply(loaded.model, ctx_for(loaded, "bert", "seq2seq", cfg))
    tuned = [n for n, p in model.named_parameters() if p.requires_grad and "ln_tuning" in n]
    assert tuned and not any("crossattention" in n for n in tuned)


@pytest.mark.parametrize("name", ["loha", "lokr", "oft", "boft", "hra"])
def test_gpt2_refusal_stays_true_in_peft(name, tiny_model_dir):
    """The support table's GPT-2 reason: these tuners refuse transformers' Conv1D."""
    from peft import get_peft_model

    from finetune.models import FAMILIES

    assert METHODS[name].unsupported_reason(FAMILIES["gpt2"], "causal")
    loaded, _ = load(tiny_model_dir, "gpt2", "causal")
    config = METHODS[name].peft_config(
        loaded.model, ctx_for(loaded, "gpt2", "causal", method_config(name))
    )
    with pytest.raises((TypeError, ValueError), match=r"Conv1D|not supported"):
        get_peft_model(loaded.model, config)


def test_compare_groups_come_from_the_registry():
    from finetune.commands.compare import parse_methods
    from finetune.methods import group_names

    assert parse_methods("all") == list(METHODS)
    family = parse_methods("lora-family")
    assert family == group_names("lora-family") and {"lora", "vera", "adalora"} <= set(family)
    assert set(parse_methods("prompts")) == {"prefix", "prompt", "ptuning"}
    assert parse_methods("full,adapters,oft")[:2] == ["full", "ia3"]
    assert len(parse_methods("lora,lora-family")) == len(family)
    every = ["full"] + group_names("lora-family") + group_names("adapters") + group_names("prompts")
    assert sorted(every) == sorted(METHODS)  # every method is in exactly one group (or full)


def test_compare_runs_lora_inits_as_variants_of_the_recipes_method():
    from finetune.commands.compare import parse_methods
    from finetune.comparison.recipes import method_recipe

    assert parse_methods("lora,lora:pissa,dora:eva") == ["lora", "lora:pissa", "dora:eva"]
    with pytest.raises(Exception, match="unknown method"):
        parse_methods("lora:nope")
    base = {"method": {"name": "lora", "r": 16, "dropout": 0.0}, "train": {"lr": 1e-3}}
    pissa = method_recipe(base, "lora:pissa")
    assert pissa["method"] == {"name": "lora", "r": 16, "dropout": 0.0, "init": "pissa"}
    assert pissa["train"]["lr"] == 1e-3  # only the init differs from the recipe's own run
    eva = method_recipe(base, "dora:eva")
    assert eva["method"] == {"name": "dora", "init": "eva"}
    assert eva["train"]["lr"] == METHODS["dora"].default_lr


NEW_PEFT = ["loha", "lokr", "vera", "adalora", "randlora", "vblora", "fourierft", "oft", "boft"]
NEW_PEFT += ["hra", "ln_tuning", "ptuning"]


@pytest.mark.parametrize("name", NEW_PEFT)
def test_saved_adapter_loads_in_plain_peft(name, tiny_model_dir, tmp_path):
    """peft's format: PeftModel.from_pretrained alone gives the trained model's outputs."""
    import torch
    from peft import PeftModel

    from finetune.methods.base import TrainingPlan
    from tests.test_methods_matrix import METHOD_OPTIONS

    family, kind = ("t5", "seq2seq") if name == "ptuning" else ("bert", "classification")
    loaded, tokenizer = load(tiny_model_dir, family, kind)
    ctx = ctx_for(loaded, family, kind, method_config(name, **METHOD_OPTIONS.get(name, {})))
    ctx.plan = TrainingPlan(10, lambda n: [])
    model = METHODS[name].apply(loaded.model, ctx)
    with torch.no_grad():
        for param in model.parameters():
            if param.requires_grad:
                param.add_(torch.randn_like(param) * 0.1)
    model.eval()
    inputs = batch(tokenizer, kind)
    with torch.no_grad():
        want = model(**inputs).logits
    METHODS[name].save(model, tmp_path)
    fresh, _ = load(tiny_model_dir, family, kind)
    again = PeftModel.from_pretrained(fresh.model, str(tmp_path)).eval()
    with torch.no_grad():
        assert torch.allclose(again(**inputs).logits, want, atol=1e-5)


def test_every_tuner_option_is_a_keyword_of_its_peft_config():
    """Options reach peft by name (TunerMethod.peft_names renames): a new recipe option with
    no peft keyword of that name, or a wrong rename, fails here instead of in a user's run."""
    import dataclasses
    import types

    import peft

    from finetune.methods import METHODS
    from finetune.methods.tuner import TunerMethod

    plan = types.SimpleNamespace(total_steps=300)
    for name, method in METHODS.items():
        if not isinstance(method, TunerMethod):
            continue
        options = method.tuner_options(
            method.config_class(name=name), types.SimpleNamespace(plan=plan)
        )
        fields = {f.name for f in dataclasses.fields(getattr(peft, method.peft_class))}
        assert set(options) <= fields, (name, set(options) - fields)
        renamed = {method.peft_names.get(k, k) for k in method.config_class.model_fields}
        assert renamed - {"name", "target_modules", *method.peft_skip} <= set(options), name


def test_boft_leaves_the_compiler_variables_as_they_were(tiny_model_dir, monkeypatch):
    """peft's BOFT sets CC=CXX=gcc to build its CUDA extension and keeps them after a failed
    build: torch.compile's C++ kernels then linked without libstdc++ in later processes."""
    import os

    from tests.test_frozen_dtype import _model

    monkeypatch.delenv("CC", raising=False)
    monkeypatch.setenv("CXX", "g++")
    _model(tiny_model_dir, "bert", "boft")
    assert "CC" not in os.environ and os.environ["CXX"] == "g++"
