"""`train.cuda_graphs`: the length buckets, padding that leaves the loss as it was, when a run
is graphed and when it falls back to its blocks, and (on a CPU, where the same compiled path
runs without CUDA graphs) a whole run that trains as the eager one does and reloads."""

from __future__ import annotations

import json

import pytest

from finetune.train.compiled import CompilePlan, with_graphs
from finetune.train.graphs import bucket_width, length_buckets, pad_to_bucket, why_not_graphs


def test_buckets_double_from_16_up_to_max_length():
    assert length_buckets(64) == (16, 32, 64)
    assert length_buckets(128) == (16, 32, 64, 128)
    assert length_buckets(40) == (16, 32, 40)
    assert length_buckets(8) == (8,)
    assert length_buckets(512) == (16, 32, 64, 128, 256, 512)
    assert [bucket_width(n, (16, 32, 40)) for n in (1, 16, 17, 33, 40)] == [16, 16, 32, 40, 40]
    assert bucket_width(50, (16, 32, 40)) == 50  # longer than every bucket: its own width


def test_pad_to_bucket_pads_inputs_and_leaves_labels():
    import torch

    batch = {
        "input_ids": torch.tensor([[5, 6, 7], [8, 9, 1]]),
        "attention_mask": torch.tensor([[1, 1, 1], [1, 1, 0]]),
        "token_type_ids": torch.tensor([[0, 1, 1], [0, 0, 0]]),
        "labels": torch.tensor([1, 0]),
    }
    padded = pad_to_bucket(batch, (4, 8), pad_id=1)
    assert padded["input_ids"].tolist() == [[5, 6, 7, 1], [8, 9, 1, 1]]
    assert padded["attention_mask"].tolist() == [[1, 1, 1, 0], [1, 1, 0, 0]]
    assert padded["token_type_ids"].tolist() == [[0, 1, 1, 0], [0, 0, 0, 0]]
    assert padded["labels"] is batch["labels"]
    assert batch["input_ids"].shape == (2, 3)  # the caller's batch is left as it was
    assert pad_to_bucket(padded, (4, 8), pad_id=1) is padded  # already a bucket's width


@pytest.mark.parametrize("family", ["bert", "gpt2", "llama"])
def test_padding_to_a_bucket_leaves_the_loss_unchanged(tiny_model_dir, family):
    """Encoders read position 0, decoders the last non-pad token: neither reads a pad."""
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    path = str(tiny_model_dir(family))
    tokenizer = AutoTokenizer.from_pretrained(path)
    model = AutoModelForSequenceClassification.from_pretrained(path, num_labels=2).eval()
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    model.config.pad_token_id = pad
    torch.manual_seed(0)
    ids = torch.randint(5, 60, (3, 7))
    ids[ids == pad] = 5
    mask = torch.ones_like(ids)
    ids[2, 5:], mask[2, 5:] = pad, 0
    batch = {"input_ids": ids, "attention_mask": mask, "labels": torch.tensor([0, 1, 1])}
    with torch.no_grad():
        plain = model(**batch).loss
        padded = model(**pad_to_bucket(batch, (16,), pad)).loss
    assert float(padded) == pytest.approx(float(plain), rel=1e-5, abs=1e-6)


def test_which_runs_are_graphed():
    assert why_not_graphs("classification", 1, False) is None
    assert why_not_graphs("regression", 1, False) is None
    assert "summarization" in why_not_graphs("summarization", 1, False)
    assert "2 processes" in why_not_graphs("classification", 2, False)
    assert "k-bit" in why_not_graphs("classification", 1, True)
    assert "grad_accum is 4" in why_not_graphs("regression", 1, False, grad_accum=4)


def test_asking_for_graphs_compiles_even_where_auto_would_not():
    off = CompilePlan(False, "too few steps", "k")
    assert with_graphs(off, False, None) is off
    on = with_graphs(off, True, None)
    assert on.enabled and on.graphs and on.why == "train.cuda_graphs=true"
    assert on.key != off.key  # its cached graphs are not the blocks'
    assert with_graphs(off, True, "2 processes") is off  # falls back to the plan as it was
    asked = CompilePlan(True, "train.compile=true", "k")
    assert with_graphs(asked, True, None).why == "train.compile=true"


def test_graphs_without_compile_is_refused_naming_both_keys(tmp_path, runner, sentiment_files):
    from finetune.cli import app
    from tests.conftest import classification_recipe, write_recipe

    train, dev = sentiment_files
    data = classification_recipe(tmp_path / "m", train, dev, tmp_path / "run", {"name": "lora"})
    data["train"].update(compile=False, cuda_graphs=True)
    recipe = write_recipe(tmp_path / "r.yaml", data)
    result = runner.invoke(app, ["validate", str(recipe)])
    assert result.exit_code == 2, result.output
    assert "train.cuda_graphs" in result.output and "train.compile" in result.output


@pytest.mark.slow
def test_graphed_run_trains_like_eager_and_reloads(
    tmp_path, runner, tiny_model_dir, sentiment_files, monkeypatch
):
    """On a CPU the forward compiles whole (no CUDA graphs to record) over padded buckets:
    the same losses as the eager run to float tolerance, the adapter saved and reloaded."""
    from finetune.cli import app
    from finetune.train import graphs
    from tests.conftest import deterministic_lora_recipe, write_recipe

    monkeypatch.setenv("FINETUNE_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", str(tmp_path / "cache" / "inductor"))
    seen: list[tuple[int, ...]] = []
    original = graphs.pad_to_bucket

    def recording(batch, buckets, pad_id):
        padded = original(batch, buckets, pad_id)
        seen.append(tuple(padded["input_ids"].shape))
        return padded

    monkeypatch.setattr(graphs, "pad_to_bucket", recording)
    train, dev = sentiment_files
    losses, outputs = {}, {}
    for name, graphed in (("eager", False), ("graphs", True)):
        data = deterministic_lora_recipe(tiny_model_dir, train, dev, tmp_path / name)
        data["train"].update(compile=graphed, cuda_graphs=graphed)
        result = runner.invoke(
            app, ["run", str(write_recipe(tmp_path / f"{name}.yaml", data)), "--no-progress"]
        )
        assert result.exit_code == 0, result.output
        outputs[name] = result.output
        rows = [json.loads(r) for r in (tmp_path / name / "log.jsonl").read_text().splitlines()]
        losses[name] = [r["loss"] for r in rows if "loss" in r]
    assert "the whole training forward" in outputs["graphs"]
    assert "the whole training forward" not in outputs["eager"]
    assert seen and {width for _, width in seen} <= set(length_buckets(32))
    assert len(losses["graphs"]) == len(losses["eager"]) >= 2
    assert losses["graphs"] == pytest.approx(losses["eager"], rel=1e-4, abs=1e-5)
    metrics = json.loads((tmp_path / "graphs" / "metrics.json").read_text())
    again = runner.invoke(app, ["eval", str(tmp_path / "graphs")])
    assert again.exit_code == 0, again.output
    evaluated = json.loads((tmp_path / "graphs" / "eval_eval.json").read_text())
    assert evaluated["accuracy"] == pytest.approx(metrics["accuracy"])


@pytest.mark.slow
def test_a_decoder_classifier_compiles_whole_without_a_cache(tiny_model_dir):
    """A Llama classifier as a run sets it up (LoRA, the recomputed gated MLP): its graphed
    forward turns the KV cache off and compiles with no graph break, to the eager loss."""
    import torch
    from peft import LoraConfig, get_peft_model
    from torch._dynamo.utils import counters
    from transformers import AutoModelForSequenceClassification

    from finetune.models.lean_backward import recompute_gated_mlp
    from finetune.train.graphs import graphed_forward

    torch.manual_seed(0)
    path = str(tiny_model_dir("llama"))
    base = AutoModelForSequenceClassification.from_pretrained(path, num_labels=2)
    base.config.pad_token_id = 0
    model = get_peft_model(base, LoraConfig(task_type="SEQ_CLS", r=4, lora_dropout=0.0,
                                            target_modules=["q_proj", "v_proj"]))  # fmt: skip
    assert recompute_gated_mlp(model) > 0
    ids = torch.randint(5, 60, (4, 11))
    batch = {"input_ids": ids, "attention_mask": torch.ones_like(ids),
             "labels": torch.tensor([0, 1, 1, 0])}  # fmt: skip
    eager = model(**batch).loss
    breaks = sum(counters["graph_break"].values())
    forward = graphed_forward(model, (16,), pad_id=0, cuda=False)
    assert model.config.use_cache is False
    compiled = forward(batch)
    compiled.backward()
    assert sum(counters["graph_break"].values()) == breaks
    assert float(compiled) == pytest.approx(float(eager), rel=1e-4, abs=1e-5)
