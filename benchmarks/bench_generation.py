"""Generation-eval throughput: our eval path vs transformers' Seq2SeqTrainer.predict.

Same model object, same tokenised inputs and labels, same batch size and decoding settings
(one GenerationConfig), both computing the loss and generating, in one process. Our path wins
by sorting the split by input length (little padding, and no pad columns per sub-batch), by one
pass over each input for the loss and generate (the encoder's output; a decoder's prompt KV
cache) and by skipping the Trainer's cross-batch padding/concatenation of generated tokens.

A decoder (GPT-2) cannot do both in one Seq2SeqTrainer.predict (generate would continue the
target): its baseline is Trainer.evaluate for the loss over prompt + target plus
Seq2SeqTrainer.predict on the left-padded prompts, the two calls a Trainer user makes.

    python benchmarks/bench_generation.py            # bert2bert from the bundled MiniLM
    python benchmarks/bench_generation.py --rows 64 --num-beams 1
    python benchmarks/bench_generation.py --recipe recipes/gpt2_lora_dialogsum.yaml --rows 128

With --recipe, the eval batch size, beams, no_repeat_ngram_size and max lengths come from the
recipe; a Hub model (gpt2, t5-small) is random-initialised from its architecture's config (no
Hub here) with the bundled MiniLM tokenizer, so it generates max_new_tokens for every row.
"""

from __future__ import annotations

import argparse
import platform
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
DIALOGSUM = REPO.parent / "shared" / "data" / "dialogsum" / "dev.jsonl"
FALLBACK = REPO / "recipes" / "data" / "dialogsum" / "sample.jsonl"


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="bundled:minilm-l6")
    parser.add_argument("--recipe", type=Path, help="take the model shape and eval settings here")
    parser.add_argument("--rows", type=int, default=500, help="DialogSum dialogues (dev has 500)")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--num-beams", type=int, default=2)
    parser.add_argument("--max-new-tokens", type=int, help="default: the recipe's, else 32")
    parser.add_argument("--no-repeat-ngram-size", type=int, default=0)
    parser.add_argument("--max-length", type=int, default=512)
    parser.add_argument("--max-target-length", type=int, default=64)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=1, help="best of N timed runs per path")
    args = parser.parse_args()
    if args.recipe:
        apply_recipe(args)
    args.max_new_tokens = args.max_new_tokens or 32
    return args


def apply_recipe(args: argparse.Namespace) -> None:
    """The recipe's eval batch size, decoding settings and max lengths; its model, or a random
    model of the same architecture where the weights are on the Hub."""
    import yaml

    recipe = yaml.safe_load(args.recipe.read_text())
    gen = recipe.get("eval", {}).get("generation", {})
    args.batch_size = recipe.get("eval", {}).get("batch_size", args.batch_size)
    args.num_beams = gen.get("num_beams", args.num_beams)
    args.max_new_tokens = args.max_new_tokens or gen.get("max_new_tokens")
    args.no_repeat_ngram_size = gen.get("no_repeat_ngram_size", 0)
    args.max_length = recipe["train"].get("max_length", args.max_length)
    args.max_target_length = recipe["train"].get("max_target_length", args.max_target_length)
    name = recipe["model"]["name"]
    args.model = name if name.startswith("bundled:") else random_model(name)


def random_model(name: str) -> str:
    """A random-initialised gpt2 / t5-small of the real shape, saved with the MiniLM tokenizer."""
    import transformers

    from finetune.models.names import resolve_name

    transformers.set_seed(0)  # the same random model on every run
    tokenizer = transformers.AutoTokenizer.from_pretrained(resolve_name("bundled:minilm-l6").path)
    vocab = len(tokenizer)
    ids = {"pad_token_id": tokenizer.pad_token_id, "eos_token_id": tokenizer.sep_token_id}
    if "t5" in name:
        config = transformers.T5Config(vocab_size=vocab, decoder_start_token_id=0, **ids)
        model = transformers.T5ForConditionalGeneration(config)  # T5Config() is t5-small
    elif "gpt2" in name:
        config = transformers.GPT2Config(vocab_size=vocab, bos_token_id=None, **ids)
        model = transformers.GPT2LMHeadModel(config)  # GPT2Config() is gpt2 (124M)
    else:
        raise SystemExit(f"no random stand-in for {name!r}: use gpt2 or t5 recipes")
    out = Path(tempfile.mkdtemp(prefix="bench-generation-")) / name.replace("/", "--")
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    return str(out)


def build(args: argparse.Namespace) -> tuple[Any, Any, list[Any], list[dict[str, Any]]]:
    """Task, model, examples and features, exactly as `finetune eval` would build them."""
    from finetune.commands.build import make_task
    from finetune.data.readers import LocalSource, read_local
    from finetune.models.loading import load_base_model, load_tokenizer
    from finetune.models.names import resolve_name
    from finetune.recipe.schema import Recipe
    from finetune.setup.architecture import recipe_architecture

    data = DIALOGSUM if DIALOGSUM.exists() else FALLBACK
    recipe = Recipe.model_validate(
        {
            "model": {"name": args.model},
            "task": {"type": "summarization", "text": "dialogue", "summary": "summary"},
            "data": {"train": str(data)},
            "method": {"name": "full"},
            "train": {
                "max_length": args.max_length,
                "max_target_length": args.max_target_length,
            },
            "eval": {
                "batch_size": args.batch_size,
                "generation": {
                    "max_new_tokens": args.max_new_tokens,
                    "num_beams": args.num_beams,
                    "no_repeat_ngram_size": args.no_repeat_ngram_size,
                },
            },
        }
    )
    family = recipe_architecture(recipe)
    task = make_task(recipe, family)
    resolved = resolve_name(recipe.model.name)
    task.tokenizer = load_tokenizer(resolved.path)
    model = load_base_model(resolved, family, task.model_kind(), task.tokenizer).model.eval()
    model.generation_config = task.generation_config(model)  # the Trainer reads it from here
    examples = task.examples(read_local(LocalSource(path=str(data)), None, args.rows), "eval")
    return task, model, examples, task.encode(examples, training=False)


def time_ours(
    task: Any, model: Any, examples: list[Any], features: list[dict], batch_size: int
) -> tuple:
    from accelerate import Accelerator

    from finetune.train.batching import ListDataset
    from finetune.train.evaluation import make_eval_loader, run_eval

    accelerator = Accelerator(cpu=True)
    loader = make_eval_loader(ListDataset(features), task, batch_size, accelerator)
    start, cpu = time.perf_counter(), time.process_time()
    metrics, predictions = run_eval(model, task, loader, examples, accelerator)
    return time.perf_counter() - start, predictions, metrics["loss"], time.process_time() - cpu


def trainer_args(out_dir: str, batch_size: int, generate: bool = True) -> Any:
    from transformers import Seq2SeqTrainingArguments

    return Seq2SeqTrainingArguments(
        output_dir=out_dir,
        per_device_eval_batch_size=batch_size,
        predict_with_generate=generate,
        use_cpu=True,
        report_to=[],
        disable_tqdm=True,
        dataloader_num_workers=0,
    )


def time_trainer(
    task: Any, model: Any, features: list[dict], out_dir: str, batch_size: int
) -> tuple:
    """Seq2SeqTrainer.predict: the loss and generated texts of an encoder-decoder in one call."""
    if task.is_causal():
        return time_trainer_decoder(task, model, features, out_dir, batch_size)
    import datasets
    from transformers import DataCollatorForSeq2Seq, Seq2SeqTrainer

    rows = [{"input_ids": f["input_ids"], "labels": f["labels"]} for f in features]
    trainer = Seq2SeqTrainer(
        model=model,
        args=trainer_args(out_dir, batch_size),
        data_collator=DataCollatorForSeq2Seq(task.tokenizer, model=model),
        processing_class=task.tokenizer,
    )
    start, cpu = time.perf_counter(), time.process_time()
    output = trainer.predict(datasets.Dataset.from_list(rows))
    seconds, cpu = time.perf_counter() - start, time.process_time() - cpu
    texts = decode(task, output.predictions)
    return seconds, texts, float(output.metrics["test_loss"]), cpu


def time_trainer_decoder(
    task: Any, model: Any, features: list[dict], out_dir: str, batch_size: int
) -> tuple:
    """Trainer.evaluate (loss over prompt + target) + Seq2SeqTrainer.predict (left-padded
    prompts): what a Trainer user runs for a decoder's loss and generated texts."""
    import copy

    import datasets
    from transformers import DataCollatorForSeq2Seq, DataCollatorWithPadding, Seq2SeqTrainer

    left = copy.deepcopy(task.tokenizer)
    left.padding_side = "left"
    full = [{"input_ids": f["input_ids"], "labels": f["labels"]} for f in features]
    prompts = [{"input_ids": f["prompt_ids"]} for f in features]
    loss_trainer = Seq2SeqTrainer(
        model=model,
        args=trainer_args(out_dir, batch_size, generate=False),
        data_collator=DataCollatorForSeq2Seq(task.tokenizer, model=model),
    )
    generating = Seq2SeqTrainer(
        model=model,
        args=trainer_args(out_dir, batch_size),
        data_collator=DataCollatorWithPadding(left),
        processing_class=left,
    )
    start, cpu = time.perf_counter(), time.process_time()
    metrics = loss_trainer.evaluate(datasets.Dataset.from_list(full))
    output = generating.predict(datasets.Dataset.from_list(prompts))
    seconds, cpu = time.perf_counter() - start, time.process_time() - cpu
    size = batch_size
    widths = [len(f["prompt_ids"]) for f in features]
    cut = [max(widths[i - i % size : i - i % size + size]) for i in range(len(widths))]
    ids = output.predictions
    new = [row[width:] for row, width in zip(ids, cut)]  # the prompt is cut off the output
    return seconds, decode(task, new), float(metrics["eval_loss"]), cpu


def decode(task: Any, ids: Any) -> list[str]:
    import numpy as np

    pad = task.tokenizer.pad_token_id
    rows = [np.where(np.asarray(row) < 0, pad, row).tolist() for row in ids]
    texts = task.tokenizer.batch_decode(rows, skip_special_tokens=True)
    return [" ".join(t.split()) for t in texts]


def describe(args: argparse.Namespace, model: Any) -> str:
    if args.model.startswith("bundled:"):
        return f"{args.model} as bert2bert (EncoderDecoderModel, untrained cross-attn)"
    kind = type(model.get_decoder() if hasattr(model, "get_decoder") else model).__name__
    return f"random-initialised {Path(args.model).name} ({type(model).__name__}, {kind})"


def padding_share(lengths: list[int], batch_size: int, sort: bool) -> float:
    """Fraction of input positions that are padding, in file order or length-sorted."""
    order = sorted(lengths, reverse=True) if sort else list(lengths)
    batches = [order[i : i + batch_size] for i in range(0, len(order), batch_size)]
    padded = sum(max(b) * len(b) for b in batches)
    return 1 - sum(lengths) / padded


def main() -> None:
    import torch
    import transformers

    args = parse_args()
    torch.set_num_threads(args.threads)
    transformers.logging.set_verbosity_error()
    task, model, examples, features = build(args)
    lengths = [f["length"] for f in features]
    ours, trainer = [], []
    with tempfile.TemporaryDirectory() as tmp:
        for _ in range(args.repeats):  # alternate, so machine-load drift hits both alike
            ours.append(time_ours(task, model, examples, features, args.batch_size))
            trainer.append(time_trainer(task, model, features, tmp, args.batch_size))
    best_ours = min(ours, key=lambda r: r[0])
    best_trainer = min(trainer, key=lambda r: r[0])
    same = sum(a == b for a, b in zip(best_ours[1], best_trainer[1])) / len(examples)
    n = len(examples)
    lines = [
        "generation eval: finetune run_eval vs transformers Seq2SeqTrainer.predict",
        f"model: {describe(args, model)}, "
        f"{sum(p.numel() for p in model.parameters()) / 1e6:.1f}M params",
        f"data: DialogSum dev, {n} dialogues, input tokens mean {sum(lengths) / n:.0f} "
        f"max {max(lengths)} (truncated at {args.max_length})",
        f"settings: batch {args.batch_size}, num_beams {args.num_beams}, max_new_tokens "
        f"{args.max_new_tokens}, no_repeat_ngram_size {args.no_repeat_ngram_size}, "
        f"loss + generation on both sides, best of {args.repeats}"
        + (f", recipe {args.recipe}" if args.recipe else ""),
        f"machine: {platform.processor() or platform.machine()}, torch {torch.__version__} "
        f"({args.threads} threads, CPU), transformers {transformers.__version__}",
        f"input padding: file order {padding_share(lengths, args.batch_size, False):.0%}, "
        f"length-sorted {padding_share(lengths, args.batch_size, True):.0%}",
        f"Seq2SeqTrainer(predict_with_generate=True): {best_trainer[0]:7.2f} s wall "
        f"{best_trainer[3]:7.2f} s CPU  {n / best_trainer[0]:6.2f} sentences/s  "
        f"loss {best_trainer[2]:.4f}",
        f"finetune eval path:                         {best_ours[0]:7.2f} s wall "
        f"{best_ours[3]:7.2f} s CPU  {n / best_ours[0]:6.2f} sentences/s  "
        f"loss {best_ours[2]:.4f}",
        f"speed-up: {best_trainer[0] / best_ours[0]:.2f}x wall, "
        f"{best_trainer[3] / best_ours[3]:.2f}x CPU time; identical generated texts: {same:.0%}",
        "all timings (s): ours "
        + ", ".join(f"{r[0]:.2f}" for r in ours)
        + "; trainer "
        + ", ".join(f"{r[0]:.2f}" for r in trainer),
    ]
    print("\n".join(lines))


if __name__ == "__main__":
    main()
