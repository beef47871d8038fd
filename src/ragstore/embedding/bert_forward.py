"""A BERT encoder's forward pass for one unpadded text, written out over the model's weights.

Why: a search's query encode is one short text (about 20 tokens) through a small BERT
(MiniLM-L6). At that size the Hugging Face ``BertModel`` spends a sixth of its forward in
Python: module calls and hooks, keyword handling, attention-mask and position/type-id
construction, separate Q, K and V projections. The arithmetic (the matrix products, 77% of
the time under ``torch.profiler``) is the same whoever calls it. This module does the same
arithmetic with functional calls over the model's own tensors: one fused QKV projection
(the three weight matrices concatenated once at load), ``scaled_dot_product_attention``
without a mask (one unpadded text attends to every token), ``layer_norm``, ``gelu``.
On this project's 2-core machine a SciFact query encodes in about 8.7 ms against
10.2-10.8 ms through ``BertModel`` (docs/benchmarks.md, "Query encode without the module
stack").

It is only for what it reproduces exactly: :meth:`BertForward.of` accepts a plain
``BertModel`` (absolute position embeddings, exact GELU, encoder only, float weights, eval
mode) and returns ``None`` for anything else; the caller (``_SingleText.of`` in
``embedding/local.py``) then also compares its vectors with the model's own on a probe of
awkward texts before using it, and keeps the model's own forward when they differ.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F


@dataclass(frozen=True)
class _Layer:
    """One encoder layer's tensors, the Q, K and V projections fused into one."""

    qkv_weight: torch.Tensor
    qkv_bias: torch.Tensor
    out_weight: torch.Tensor
    out_bias: torch.Tensor
    attn_norm_weight: torch.Tensor
    attn_norm_bias: torch.Tensor
    up_weight: torch.Tensor
    up_bias: torch.Tensor
    down_weight: torch.Tensor
    down_bias: torch.Tensor
    norm_weight: torch.Tensor
    norm_bias: torch.Tensor


class BertForward:
    """``BertModel(input_ids=ids).last_hidden_state`` of one unpadded text, mean-pooled.

    Call it under ``torch.inference_mode`` with a ``(1, tokens)`` tensor of ids on the
    model's device; it returns the ``(1, hidden)`` mean of the last hidden states.
    """

    def __init__(self, model: Any) -> None:
        config = model.config
        embeddings = model.embeddings
        self.heads = int(config.num_attention_heads)
        self.hidden = int(config.hidden_size)
        self.head_size = self.hidden // self.heads
        self.eps = float(config.layer_norm_eps)
        self.words = embeddings.word_embeddings.weight
        self.positions = embeddings.position_embeddings.weight
        # BertModel's default token types: its zero buffer, read per position
        types = getattr(embeddings, "token_type_ids", None)
        type_rows = types[0] if types is not None else torch.zeros_like(self.positions[:, 0])
        self.types = embeddings.token_type_embeddings.weight[type_rows.long()]
        self.embed_norm = (embeddings.LayerNorm.weight, embeddings.LayerNorm.bias)
        self.layers: list[_Layer] = []
        self.scale: float | None = None
        for layer in model.encoder.layer:
            att = layer.attention.self
            self.scale = float(att.scaling)
            out = layer.attention.output
            self.layers.append(
                _Layer(
                    qkv_weight=torch.cat(
                        [att.query.weight, att.key.weight, att.value.weight]
                    ).contiguous(),
                    qkv_bias=torch.cat([att.query.bias, att.key.bias, att.value.bias]),
                    out_weight=out.dense.weight,
                    out_bias=out.dense.bias,
                    attn_norm_weight=out.LayerNorm.weight,
                    attn_norm_bias=out.LayerNorm.bias,
                    up_weight=layer.intermediate.dense.weight,
                    up_bias=layer.intermediate.dense.bias,
                    down_weight=layer.output.dense.weight,
                    down_bias=layer.output.dense.bias,
                    norm_weight=layer.output.LayerNorm.weight,
                    norm_bias=layer.output.LayerNorm.bias,
                )
            )

    @classmethod
    def of(cls, model: Any) -> BertForward | None:
        """The written-out forward of ``model``, or ``None`` where it would not be BERT's."""
        from transformers import BertModel

        if type(model) is not BertModel or model.training:
            return None
        config = model.config
        if (
            getattr(config, "position_embedding_type", "absolute") != "absolute"
            or config.hidden_act != "gelu"
            or getattr(config, "is_decoder", False)
            or getattr(config, "add_cross_attention", False)
            or config.hidden_size % config.num_attention_heads
        ):
            return None
        if any(p.dtype != torch.float32 for p in model.parameters()):
            return None
        embeddings = model.embeddings
        if not all(
            hasattr(embeddings, name)
            for name in ("word_embeddings", "position_embeddings", "token_type_embeddings")
        ):
            return None
        with torch.no_grad():
            return cls(model)

    def __call__(self, ids: torch.Tensor) -> torch.Tensor:
        n = ids.shape[1]
        hidden, heads, head_size, eps = self.hidden, self.heads, self.head_size, self.eps
        # BertEmbeddings' order: (words + token types) + positions
        x = self.words[ids[0]] + self.types[:n] + self.positions[:n]
        x = F.layer_norm(x, (hidden,), *self.embed_norm, eps)
        for lay in self.layers:
            qkv = F.linear(x, lay.qkv_weight, lay.qkv_bias).view(n, 3, heads, head_size)
            qkv = qkv.permute(1, 2, 0, 3)  # (q/k/v, heads, tokens, head size)
            att = F.scaled_dot_product_attention(qkv[0], qkv[1], qkv[2], scale=self.scale)
            att = att.transpose(0, 1).reshape(n, hidden)
            x = F.layer_norm(
                F.linear(att, lay.out_weight, lay.out_bias) + x,
                (hidden,),
                lay.attn_norm_weight,
                lay.attn_norm_bias,
                eps,
            )
            up = F.gelu(F.linear(x, lay.up_weight, lay.up_bias))
            x = F.layer_norm(
                F.linear(up, lay.down_weight, lay.down_bias) + x,
                (hidden,),
                lay.norm_weight,
                lay.norm_bias,
                eps,
            )
        return x.sum(dim=0, keepdim=True) / n  # the mean as sentence-transformers pools it
