"""The last encoder layer computes position 0 alone when the classifier reads nothing else.

A BERT-family sequence classifier (BERT, RoBERTa, XLM-R, CamemBERT, ELECTRA, DistilBERT;
classification and regression) reads its last layer at the first position only: BERT's pooler
and the others' classification heads take `hidden_states[:, 0]`. Every other position of that
layer is computed and thrown away: its query, attention output, feed-forward block and
LayerNorms, forward and backward. In training the swapped last layer computes keys and values
for every position (the first attends to them all) and everything else for the first position
only, as MosaicBERT's final layer computes only the positions its loss reads (`subset_idx` in
its bert_layers.py). On a 6-layer model that is about 13% of a step's matrix products and
elementwise work.

The head sees the same numbers up to float rounding (tested against the layer's own forward,
logits and gradients, for every family above). With dropout on, the last layer's dropout draws
masks for one position instead of all, so a training step's draws differ (same distribution).
Evaluation runs the whole layer: a run's metrics then equal, bit for bit, what `eval` and
`predict` compute from the saved run (a one-position query sums in another order).

Applied only where that is exactly what happens: the model is one of the classes above, and its
last layer's and self-attention's forwards are BERT's (or DistilBERT's) code (compared by
source, comments aside), with no feed-forward chunking and no causal mask (a checkpoint
configured as a decoder: sdpa turns `is_causal` off for a one-position query, so position 0
would see every position). A call with a cache or encoder states (cross-attention) runs the
layer's own forward. Under gradient checkpointing the swapped layer is checkpointed as the
class's own forward would be. The swap is on the instance in memory; nothing saved changes, and
`eval`, `predict` and `merge` load the model as transformers builds it. In training the model's
own `output_hidden_states` / `output_attentions` hold one position for the last layer (finetune
asks for neither while training).
"""

from __future__ import annotations

import functools
import inspect
import logging
import re
import sys
import types
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # pragma: no cover
    import torch

    from finetune.types import Model, Tensor

log = logging.getLogger(__name__)

# sequence classifiers whose head reads only position 0 of the last layer -> their layer code
FIRST_TOKEN_HEADS = {
    "BertForSequenceClassification": "bert",
    "RobertaForSequenceClassification": "bert",
    "XLMRobertaForSequenceClassification": "bert",
    "CamembertForSequenceClassification": "bert",
    "ElectraForSequenceClassification": "bert",
    "DistilBertForSequenceClassification": "distilbert",
}
SWAPPED = "_finetune_first_token"  # set on the layer whose forward was swapped


def first_token_last_layer(model: Model) -> bool:
    """Swap the last layer's forward of a first-token classifier (plain or peft-wrapped);
    whether it was swapped."""
    from finetune.methods.wrapped import transformers_model

    classifier = transformers_model(model)
    kind = FIRST_TOKEN_HEADS.get(type(classifier).__name__)
    if kind is None:
        return False
    stack, is_layer, forward = _KINDS[kind]
    layers = getattr(getattr(classifier.base_model, stack, None), "layer", None)
    if not layers:
        return False
    last = layers[-1]
    if getattr(last, SWAPPED, False) or "forward" in vars(last) or not is_layer(last):
        return False  # swapped once; an instance forward (a dispatch hook) is someone else's
    last.forward = types.MethodType(forward, last)
    setattr(last, SWAPPED, True)
    log.debug("the last layer computes position 0 only: %s", type(last).__name__)
    return True


def _is_bert_layer(layer: torch.nn.Module) -> bool:
    """Whether `layer` runs exactly BERT's layer and self-attention code."""
    from transformers.models.bert import modeling_bert

    attention: Any = getattr(layer, "attention", None)
    self_attention: Any = getattr(attention, "self", None)
    if self_attention is None or getattr(layer, "chunk_size_feed_forward", None) != 0:
        return False
    if getattr(self_attention, "is_causal", False) or getattr(layer, "is_decoder", False):
        return False  # sdpa drops the causal flag for a one-position query: 0 would see all
    pairs = (
        (type(layer).forward, modeling_bert.BertLayer.forward),
        (type(attention).forward, modeling_bert.BertAttention.forward),
        (type(self_attention).forward, modeling_bert.BertSelfAttention.forward),
    )
    return all(_code(found) == _code(bert) for found, bert in pairs)


def _is_distilbert_layer(layer: torch.nn.Module) -> bool:
    """Whether `layer` runs exactly DistilBERT's block, attention and feed-forward code."""
    from transformers.models.distilbert import modeling_distilbert as distilbert

    attention: Any = getattr(layer, "attention", None)
    ffn: Any = getattr(layer, "ffn", None)
    if attention is None or getattr(ffn, "chunk_size_feed_forward", None) != 0:
        return False
    if getattr(attention, "is_causal", False):
        return False
    pairs = (
        (type(layer).forward, distilbert.TransformerBlock.forward),
        (type(attention).forward, distilbert.DistilBertSelfAttention.forward),
        (type(ffn).forward, distilbert.FFN.forward),
    )
    return all(_code(found) == _code(theirs) for found, theirs in pairs)


@functools.cache
def _code(function: Any) -> str:
    """A function's source without comments or blank lines (RoBERTa's copy of BERT's code
    differs from it in a comment)."""
    lines = (re.sub(r"\s+#.*$", "", line) for line in inspect.getsource(function).splitlines())
    return "\n".join(line for line in lines if line.strip() and not line.strip().startswith("#"))


def _bert_forward(
    self: Any,
    hidden_states: Tensor,
    attention_mask: Tensor | None = None,
    encoder_hidden_states: Tensor | None = None,
    encoder_attention_mask: Tensor | None = None,
    cache: Any = None,
    **kwargs: Any,
) -> Tensor:
    """BERT's layer for position 0: [batch, 1, hidden] (the head reads no other position)."""
    whole = cache is not None or encoder_hidden_states is not None or kwargs.get("past_key_values")
    if whole or not self.training:
        return type(self).forward(
            self,
            hidden_states,
            attention_mask,
            encoder_hidden_states,
            encoder_attention_mask,
            cache=cache,
            **kwargs,
        )
    return _checkpointed(self, _bert_first_position, hidden_states, attention_mask, kwargs)


def _distilbert_forward(
    self: Any, hidden_states: Tensor, attention_mask: Tensor | None = None, **kwargs: Any
) -> Tensor:
    """DistilBERT's block for position 0: [batch, 1, dim] (the head reads no other position)."""
    if not self.training:
        return type(self).forward(self, hidden_states, attention_mask, **kwargs)
    return _checkpointed(self, _distilbert_first_position, hidden_states, attention_mask, kwargs)


def _checkpointed(
    layer: Any, body: Any, hidden_states: Tensor, mask: Tensor | None, kwargs: dict[str, Any]
) -> Tensor:
    """`body(layer, hidden_states, mask, **kwargs)`, recomputed in the backward pass where the
    layer is checkpointed: what transformers' wrapper of the class forward does for it."""
    import torch

    if getattr(layer, "gradient_checkpointing", False) and torch.is_grad_enabled():
        step = functools.partial(body, layer, **kwargs)
        return layer._gradient_checkpointing_func(step, hidden_states, mask)
    return body(layer, hidden_states, mask, **kwargs)


def _bert_first_position(
    self: Any, hidden_states: Tensor, attention_mask: Tensor | None, **kwargs: Any
) -> Tensor:
    """BERT's attention block and feed-forward for position 0 (keys and values of all)."""
    first = hidden_states[:, :1]
    attention = self.attention.self
    projections = (attention.query, attention.key, attention.value)
    context = _attend_from_first(
        attention, projections, first, hidden_states, attention_mask, kwargs
    )
    attention_output = self.attention.output(context, first)
    return self.feed_forward_chunk(attention_output)


def _distilbert_first_position(
    self: Any, hidden_states: Tensor, attention_mask: Tensor | None, **kwargs: Any
) -> Tensor:
    """DistilBERT's block for position 0, its modules called as TransformerBlock calls them."""
    first = hidden_states[:, :1]
    attention = self.attention
    projections = (attention.q_lin, attention.k_lin, attention.v_lin)
    context = _attend_from_first(
        attention, projections, first, hidden_states, attention_mask, kwargs
    )
    attention_output = self.sa_layer_norm(attention.out_lin(context) + first)
    return self.output_layer_norm(self.ffn(attention_output) + attention_output)


def _attend_from_first(
    attention: Any,
    projections: tuple[Any, Any, Any],
    first: Tensor,
    hidden: Tensor,
    mask: Tensor | None,
    kwargs: dict[str, Any],
) -> Tensor:
    """The self-attention's forward with the query of position 0 only (keys and values of all);
    `projections` are its query, key and value layers."""
    code = sys.modules[type(attention).__module__]  # the model's own attention registry
    batch, length = hidden.shape[:2]
    size = attention.attention_head_size
    to_query, to_key, to_value = projections
    query = to_query(first).view(batch, 1, -1, size).transpose(1, 2)
    key = to_key(hidden).view(batch, length, -1, size).transpose(1, 2)
    value = to_value(hidden).view(batch, length, -1, size).transpose(1, 2)
    if mask is not None and mask.dim() == 4 and mask.shape[-2] > 1:
        mask = mask[:, :, :1]  # the first query's row of a [batch, 1, length, length] mask
    interface = code.ALL_ATTENTION_FUNCTIONS.get_interface(
        attention.config._attn_implementation, code.eager_attention_forward
    )
    output, _ = interface(
        attention,
        query,
        key,
        value,
        mask,
        dropout=0.0 if not attention.training else attention.dropout.p,
        scaling=attention.scaling,
        **kwargs,
    )
    return output.reshape(batch, 1, -1).contiguous()


# kind -> the base model's attribute holding the layers, its layer check, the swapped forward
_KINDS = {
    "bert": ("encoder", _is_bert_layer, _bert_forward),
    "distilbert": ("transformer", _is_distilbert_layer, _distilbert_forward),
}
