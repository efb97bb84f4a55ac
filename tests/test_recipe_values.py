"""Values read out of recipes and run files as YAML/JSON hold them (finetune/jsonvalues.py), and
the two compare failures the typed reading found: a rate YAML reads as text (`lr: 1e-4` is a
string in YAML 1.1) and a rate left null for the method's default."""

from __future__ import annotations

import json
from pathlib import Path

from finetune.commands.compare import rates_header
from finetune.comparison.plan import TaskSpec
from finetune.comparison.recipes import method_recipe, seed_list
from finetune.comparison.tune import (
    MIN_SEARCH_STEPS,
    SearchData,
    TuneOptions,
    new_search,
    search_steps,
)
from finetune.jsonvalues import as_object, child, integer, number
from finetune.methods import METHODS
from finetune.run.curves import eval_history, read_log


def test_helpers_narrow_decoded_values():
    assert as_object({"a": 1}) == {"a": 1} and as_object(None) == {} and as_object("x") == {}
    node: dict = {"train": None}
    child(node, "train")["lr"] = 0.1
    child(node, "eval")["batch_size"] = 8
    assert node == {"train": {"lr": 0.1}, "eval": {"batch_size": 8}}
    assert number(3) == 3.0 and number("1e-4") == 1e-4
    assert number(True) is None and number("abc") is None and number([1]) is None
    assert integer("7", 42) == 7 and integer(None, 42) == 42 and integer(False, 1) == 1


def test_untuned_header_reads_a_rate_yaml_left_as_text(tmp_path: Path):
    base = {"method": {"name": "lora"}, "train": {"lr": "1e-4"}}  # yaml.safe_load("lr: 1e-4")
    task = TaskSpec("t", base, tmp_path / "r.yaml", tmp_path)
    (header,) = rates_header(task, ["lora", "full"], [], None)
    assert "lora 0.0001 (the recipe's)" in header
    assert f"full {METHODS['full'].default_lr:g} (registry default)" in header


def test_null_rate_is_the_methods_default_and_the_search_starts_there(tmp_path: Path):
    base = {"method": {"name": "lora"}, "train": {"lr": None, "seed": "3"}}
    data = method_recipe(base, "lora")
    assert data["train"] == {"lr": METHODS["lora"].default_lr, "seed": "3"}
    split = SearchData(tmp_path / "train.jsonl", tmp_path / "dev.jsonl", rows=100)
    search = new_search("lora", data, "lora", split, tmp_path, TuneOptions(rates=3))
    assert search.default == METHODS["lora"].default_lr
    assert seed_list(base, 2) == [3, 4]
    # a short run is searched whole (1 epoch of 100 rows at batch 32 is 4 steps)
    assert search_steps({}, 100, 0.3) == 4
    assert search_steps({"max_steps": "10"}, 100, 0.5) == 10
    # a long one at the budget's fraction, but never below MIN_SEARCH_STEPS
    assert search_steps({"max_steps": "1000"}, 100, 0.3) == 300
    assert search_steps({}, 10_000, 0.3) == 94  # the quick start: 313 steps
    assert search_steps({}, 2_000, 0.3) == MIN_SEARCH_STEPS  # 63 steps: 19 would say nothing


def test_log_records_that_are_not_objects_are_skipped(tmp_path: Path):
    log = tmp_path / "log.jsonl"
    lines = [{"step": 1, "loss": 2.0}, 3, {"step": 2, "eval_loss": 1.5}, {"eval_loss": 1.0}]
    log.write_text("".join(json.dumps(line) + "\n" for line in lines) + '{"step": 3')
    assert [r.get("step") for r in read_log(log)] == [1, 2, None]
    assert eval_history(log) == [{"step": 2, "eval_loss": 1.5}]
