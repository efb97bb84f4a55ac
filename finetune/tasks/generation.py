"""The generation path shared by summarization and translation, for every family.

Encoder-decoders see `prefix + source` and learn the target as their tokenizer encodes it
(`text_target`: T5 `target </s>`, BART `<s> target </s>`, mBART with its language code), padded
with -100; bert2bert learns target + [SEP]. Decoders (GPT-2, Llama, ...) see one sequence
`[BOS] prefix + source + separator + " " + target + EOS` (BOS when their tokenizer adds one) with
the loss masked (-100) on the prompt and on padding; at generation time the prompt alone is
left-padded (so every row's last token is real and new tokens follow it directly), generation
stops at EOS and the prompt is cut off the output. With a chat template (`task.prompt`),
tasks/chat.py builds a decoder's prompt and reply instead, and generation also stops at the
template's end-of-turn token.

Decoder logits are computed only from the first labelled position on (`logits_to_keep`), in
training and in evaluation: the prompt's vocab x length logits, the largest tensor of a decoder
step, are never materialised (benchmarks/decoder_loss_memory.py).

Generation runs batched under the caller's `torch.inference_mode()`; evaluation hands us batches
sorted by input length, and we trim columns that are padding in the whole (sub-)batch. Each input
goes through the model once for both the eval loss and generate: the encoder pass of an
encoder-decoder, the prompt's KV cache of a decoder (prompt_cache.py); beam search leaves the
cross-attention cache in place (beam_cache.py).
"""

from __future__ import annotations

import copy
import logging
from typing import TYPE_CHECKING, Any

from finetune.tasks import chat
from finetune.tasks.base import (
    Example,
    Task,
    tokenize_counting_truncation,
    warn_truncated,
)
from finetune.tasks.beam_cache import beam_search_cache
from finetune.tasks.padding import (
    IGNORE,
    Generator,
    example_mean_losses,
    feeds_virtual_tokens,
    keep_from_first_label,
    mask_rows,
    pad_rows,
    slice_encoded,
    token_ids,
    trim_padding,
    unwrap_parallel,
)

if TYPE_CHECKING:  # pragma: no cover
    import torch
    from transformers import GenerationConfig
    from transformers.modeling_outputs import BaseModelOutput

    from finetune.models.architecture import Architecture
    from finetune.types import Batch, Feature, JSONObject, Model, Tokenizer

log = logging.getLogger(__name__)


class GenerationTask(Task):
    """Shared encode/collate/generate; subclasses read rows, pick prompts and metrics."""

    is_generation = True

    @classmethod
    def kind_on(cls, arch: Architecture) -> str:
        return "causal" if arch.shape == "decoder" else "seq2seq"

    def on_tokenizer(self, tokenizer: Tokenizer) -> None:
        self.configure_tokenizer(tokenizer)
        chat.on_tokenizer(self)  # resolves task.prompt now: template errors before weights

    def configure_tokenizer(self, tokenizer: Tokenizer) -> None:
        """Task-specific tokenizer settings (translation: mBART language codes)."""

    def generation_start(self) -> dict[str, int]:
        """Settings that start generated text right (translation: the target language code)."""
        return {}

    # ------------------------------------------------------------------ prompts

    def t5_prefix(self) -> str:
        """The prefix T5 was pre-trained with for this task."""
        return ""

    def causal_separator(self) -> str:
        """What ends a GPT-2 prompt, so the model knows where the source stops."""
        return "\n"

    def prefix(self) -> str:
        """task.prefix when set; else T5's pre-training prefix; else nothing."""
        if self.cfg.prefix is not None:
            return self.cfg.prefix
        return self.t5_prefix() if self.family.task_prefix else ""

    def is_causal(self) -> bool:
        return self.model_kind() == "causal"

    def prompt_mode(self) -> str | None:
        """'chat' or 'plain' for decoders (task.prompt resolved, kept in the run's state)."""
        return chat.prompt_mode(self)

    @classmethod
    def default_instruction(cls, cfg: Any) -> str:
        """What a chat prompt's user turn asks for when task.instruction is unset."""
        return ""

    # ------------------------------------------------------------------ encode

    def end_token_id(self) -> int:
        """EOS for T5/GPT-2, [SEP] for BERT tokenizers (bert2bert's end of sequence)."""
        if self.is_causal() and self.prompt_mode() == "chat":
            return chat.chat_format(self).end_of_turn
        tok = self.tokenizer
        end = tok.eos_token_id if tok.eos_token_id is not None else tok.sep_token_id
        if end is None:
            raise ValueError("the tokenizer has neither an EOS nor a SEP token")
        return int(end)

    def target_ids(self, texts: list[str], lead: str = "") -> list[list[int]]:
        """Target token ids ending in EOS, cut to train.max_target_length tokens in all."""
        if not texts:
            return []  # fast tokenizers fail on an empty batch (predict has no targets)
        limit = self.settings.max_target_length
        raw = self.tokenizer([lead + t for t in texts], add_special_tokens=False)["input_ids"]
        warn_truncated(sum(len(r) >= limit for r in raw), len(raw), limit - 1, "targets")
        return [r[: limit - 1] + [self.end_token_id()] for r in raw]

    def text_target_ids(self, texts: list[str]) -> list[list[int]]:
        """Targets as the encoder-decoder's own tokenizer encodes them (its special tokens and
        language code included), cut to train.max_target_length tokens."""
        if not texts:
            return []
        limit = self.settings.max_target_length
        ids = [list(r) for r in self.tokenizer(text_target=texts)["input_ids"]]
        cut = [i for i, r in enumerate(ids) if len(r) > limit]
        if cut:
            warn_truncated(len(cut), len(ids), limit, "targets")
            redo = self.tokenizer(
                text_target=[texts[i] for i in cut], truncation=True, max_length=limit
            )["input_ids"]
            for i, row in zip(cut, redo):
                ids[i] = list(row)
        return ids

    def encode(self, examples: list[Example], training: bool) -> list[Feature]:
        if self.is_causal():
            return self._encode_causal(examples, training)
        return self._encode_seq2seq(examples)

    def _encode_seq2seq(self, examples: list[Example]) -> list[Feature]:
        limit = self.settings.max_length
        sources = [self.prefix() + ex.source for ex in examples]
        encoded, cut = tokenize_counting_truncation(self.tokenizer, sources, limit)
        ids = encoded["input_ids"]
        warn_truncated(cut, len(sources), limit, "inputs")
        labelled = [i for i, ex in enumerate(examples) if ex.target is not None]
        texts = [examples[i].target[0] for i in labelled]
        bert2bert = self.family.shape == "encoder"
        targets = self.target_ids(texts) if bert2bert else self.text_target_ids(texts)
        labels = dict(zip(labelled, targets))
        features = []
        for i, seq in enumerate(ids):
            feat: Feature = {"input_ids": seq, "idx": i, "length": len(seq)}
            if i in labels:
                feat["labels"] = labels[i]
            features.append(feat)
        return features

    def prompt_ids(self, examples: list[Example]) -> list[list[int]]:
        """prefix + source (cut to fit train.max_length) + separator, or the chat prompt."""
        if self.prompt_mode() == "chat":
            return chat.prompt_ids(self, [ex.source for ex in examples])[0]
        tok = self.tokenizer
        sep = tok(self.causal_separator(), add_special_tokens=False)["input_ids"]
        room = max(1, self.settings.max_length - len(sep))
        lead = self.bos_ids()
        room = max(1, room - len(lead))
        texts = [self.prefix() + ex.source for ex in examples]
        raw = tok(texts, add_special_tokens=False)["input_ids"]
        warn_truncated(sum(len(r) > room for r in raw), len(raw), room, "inputs")
        return [lead + r[:room] + sep for r in raw]

    def bos_ids(self) -> list[int]:
        """[BOS] when the tokenizer starts every text with it (Llama, Gemma), else nothing:
        decoders see their prompts the way they saw text in pre-training."""
        tok = self.tokenizer
        bos = tok.bos_token_id
        if bos is None:
            return []
        return [int(bos)] if tok("a")["input_ids"][:1] == [bos] else []

    def _encode_causal(self, examples: list[Example], training: bool) -> list[Feature]:
        if self.prompt_mode() == "chat":
            prompts, targets = chat.prompts_and_replies(self, examples)
        else:
            prompts = self.prompt_ids(examples)
            labelled = [i for i, ex in enumerate(examples) if ex.target is not None]
            texts = [examples[i].target[0] for i in labelled]
            targets = dict(zip(labelled, self.target_ids(texts, lead=" ")))
        features = []
        for i, prompt in enumerate(prompts):
            feat: Feature = {"idx": i, "length": len(prompt)}
            if i in targets:
                feat["input_ids"] = prompt + targets[i]
                feat["labels"] = [IGNORE] * len(prompt) + targets[i]
            if training:
                feat["length"] = len(feat["input_ids"])
            else:
                feat["prompt_ids"] = prompt
            features.append(feat)
        return features

    # ------------------------------------------------------------------ collate

    def collate(self, features: list[Feature]) -> Batch:
        import torch

        pad = self.tokenizer.pad_token_id
        batch: Batch = {}
        if "input_ids" in features[0]:
            batch["input_ids"] = pad_rows([f["input_ids"] for f in features], pad)
            batch["attention_mask"] = mask_rows([f["input_ids"] for f in features])
        if "labels" in features[0]:
            batch["labels"] = pad_rows([token_ids(f["labels"]) for f in features], IGNORE)
            if self.is_causal() and "prompt_ids" not in features[0] and self.can_keep_logits():
                keep = keep_from_first_label(batch["labels"])
                batch["labels"] = batch["labels"][:, -keep:]
                batch["logits_to_keep"] = keep
        if "prompt_ids" in features[0]:
            prompts = [f["prompt_ids"] for f in features]
            batch["prompt_ids"] = pad_rows(prompts, pad, left=True)
            batch["prompt_mask"] = mask_rows(prompts, left=True)
        batch["idx"] = torch.tensor([f["idx"] for f in features], dtype=torch.long)
        return batch

    # ------------------------------------------------------------------ evaluation

    def eval_batch(
        self, model: Model, batch: Batch, predict: bool
    ) -> tuple[list[float] | None, list[str] | None]:
        if predict and "labels" in batch and self.can_share_prompt(model, batch):
            return self.eval_sharing_prompts(model, batch)
        encoded = None
        if predict and "labels" in batch and self.can_share_encoder(model):
            encoded = self.run_encoder(model, batch)  # once for both the loss and generate
        losses = self.example_losses(model, batch, encoded) if "labels" in batch else None
        predictions = self.generate(model, batch, encoded) if predict else None
        return losses, predictions

    def can_keep_logits(self) -> bool:
        """Training may cut decoder logits to the labelled positions unless the method prepends
        virtual tokens (peft then pads the labels for them, and they must stay full length)."""
        return not self.settings.virtual_tokens

    def can_share_encoder(self, model: Model) -> bool:
        """Encoder-decoders can reuse one encoder pass, unless peft feeds it virtual tokens."""
        return not self.is_causal() and not feeds_virtual_tokens(model)

    def can_share_prompt(self, model: Model, batch: Batch) -> bool:
        """Decoders can reuse one pass over the prompts unless peft feeds them virtual tokens,
        the model's generation config brings a cache of its own (Gemma 2's hybrid cache), or a
        prompt is a single token (nothing to cache before the last one)."""
        if not self.is_causal() or feeds_virtual_tokens(model):
            return False
        generator = unwrap_parallel(model)
        if getattr(generator.generation_config, "cache_implementation", None) is not None:
            return False
        return int(batch["prompt_mask"].sum(dim=1).min()) >= 2

    def eval_sharing_prompts(self, model: Model, batch: Batch) -> tuple[list[float], list[str]]:
        """Losses and generated texts with one prompt pass per sub-batch (tasks/prompt_cache.py)."""
        from finetune.tasks import prompt_cache

        generator = unwrap_parallel(model)
        ids, mask, labels = batch["prompt_ids"], batch["prompt_mask"], batch["labels"]
        size = self.settings.decoding.batch_size or ids.shape[0]
        pad = self.tokenizer.pad_token_id
        beams = self.settings.decoding.num_beams
        losses: list[float] = []
        texts: list[str] = []
        for start in range(0, ids.shape[0], size):
            rows = slice(start, start + size)
            sub_ids, sub_mask = trim_padding(ids[rows], mask[rows], left=True)
            cache = prompt_cache.prefill(generator, sub_ids, sub_mask)
            losses += prompt_cache.losses_after_prompt(
                generator, cache, sub_ids, sub_mask, labels[rows], pad
            )
            extra = prompt_cache.generation_cache(generator, cache, beams)
            texts += self._generate_chunk(model, sub_ids, sub_mask, extra)
        return losses, texts

    def run_encoder(self, model: Model, batch: Batch) -> BaseModelOutput:
        encoder = unwrap_parallel(model).get_encoder()
        return encoder(
            input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], return_dict=True
        )

    def example_losses(
        self, model: Model, batch: Batch, encoded: BaseModelOutput | None = None
    ) -> list[float]:
        """Mean token cross-entropy per example (so duplicates can be dropped by index)."""
        labels = batch["labels"]
        inputs: dict[str, object] = {"attention_mask": batch["attention_mask"]}
        if self.is_causal():  # our own loss below: no labels, logits only where they are
            keep = keep_from_first_label(labels)
            inputs.update(input_ids=batch["input_ids"], logits_to_keep=keep)
            labels = labels[:, -keep:]
            from finetune.train import chunked_loss  # at the labelled positions, in chunks

            targets = chunked_loss.next_token_targets(labels)
            losses = chunked_loss.example_losses(model, inputs, targets)
            if losses is not None:
                return losses
        elif encoded is not None:
            inputs.update(encoder_outputs=encoded, labels=labels)
        else:
            inputs.update(input_ids=batch["input_ids"], labels=labels)
        logits = model(**inputs).logits
        logits = logits[:, -labels.shape[1] :]  # prompt tuning prepends virtual positions
        if self.is_causal():
            logits, labels = logits[:, :-1], labels[:, 1:]
        return example_mean_losses(logits, labels)

    def generate(
        self, model: Model, batch: Batch, encoded: BaseModelOutput | None = None
    ) -> list[str]:
        """Generated texts for a batch, in sub-batches of eval.generation.batch_size."""
        causal = self.is_causal()
        ids = batch["prompt_ids"] if causal else batch["input_ids"]
        mask = batch["prompt_mask"] if causal else batch["attention_mask"]
        size = self.settings.decoding.batch_size or ids.shape[0]
        beams = self.settings.decoding.num_beams
        texts: list[str] = []
        for start in range(0, ids.shape[0], size):
            rows = slice(start, start + size)
            sub_ids, sub_mask = trim_padding(ids[rows], mask[rows], left=causal)
            extra = beam_search_cache(unwrap_parallel(model), beams)
            if encoded is not None:  # right-padded: the first columns are the real ones
                extra["encoder_outputs"] = slice_encoded(encoded, rows, sub_ids.shape[1])
            texts += self._generate_chunk(model, sub_ids, sub_mask, extra)
        return texts

    def _generate_chunk(
        self, model: Model, ids: torch.Tensor, mask: torch.Tensor, extra: dict[str, object]
    ) -> list[str]:
        generator = unwrap_parallel(model)
        config = self.generation_config(generator)
        out = generator.generate(
            input_ids=ids, attention_mask=mask, generation_config=config, **extra
        )
        width = ids.shape[1]
        if self.is_causal() and out.shape[1] >= width and bool((out[:, :width] == ids).all()):
            out = out[:, width:]
        decoded = self.tokenizer.batch_decode(out, skip_special_tokens=True)
        return [" ".join(text.split()) for text in decoded]

    def max_new_tokens(self) -> int:
        """eval.generation.max_new_tokens, by default the length targets were trained to.

        A smaller default would cut long references' predictions at generation time.
        """
        return self.settings.decoding.max_new_tokens or self.settings.max_target_length

    def generation_config(self, model: Generator) -> GenerationConfig:
        """The model's own generation config with the recipe's decoding settings on top."""
        gen = self.settings.decoding
        config = copy.deepcopy(model.generation_config)
        settings: dict[str, object] = {
            "max_new_tokens": self.max_new_tokens(),
            "max_length": None,
            "num_beams": gen.num_beams,
            "do_sample": False,
            "no_repeat_ngram_size": gen.no_repeat_ngram_size or None,
            "length_penalty": gen.length_penalty if gen.num_beams > 1 else 1.0,
            "early_stopping": gen.num_beams > 1 or config.early_stopping,
            "pad_token_id": self.tokenizer.pad_token_id,
            "use_cache": True,
        }
        if self.is_causal():
            chatting = self.prompt_mode() == "chat"
            settings["eos_token_id"] = chat.stop_ids(self) if chatting else self.end_token_id()
        settings.update(self.generation_start())
        for key, value in settings.items():
            setattr(config, key, value)
        return config

    # ------------------------------------------------------------------ output

    def prediction_record(self, prediction: str, example: Example) -> JSONObject:
        record: JSONObject = {"source": example.source, "prediction": prediction}
        refs = example.target
        if refs:
            record["reference"] = refs[0]
            if len(refs) > 1:
                record["references"] = list(refs)
        return record
