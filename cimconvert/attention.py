"""`nn.MultiheadAttention` rebuilt from explicit ``nn.Linear`` projections.

``nn.MultiheadAttention`` reads ``in_proj_weight`` (or ``q/k/v_proj_weight``) directly and never
calls its ``out_proj`` module, so swapping its ``Linear`` children would simulate nothing.
:class:`LinearMultiheadAttention` computes the same outputs with ``in_proj`` (packed) or
``q_proj``/``k_proj``/``v_proj`` (separate) and ``out_proj`` as ``nn.Linear`` modules sharing the
original parameters, so conversion can put them on crossbars; the two activation products
(q·kᵀ and attention·v) stay digital in ``F.scaled_dot_product_attention``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["LinearMultiheadAttention", "swap_multihead_attention"]


def _linear(weight: nn.Parameter, bias: nn.Parameter | None) -> nn.Linear:
    """An ``nn.Linear`` whose weight (and bias) are the given tensors, allocating nothing."""
    layer = nn.Linear(weight.shape[1], weight.shape[0], bias=bias is not None, device="meta")
    layer.weight = weight
    layer.bias = bias
    return layer


def _additive_mask(mask: torch.Tensor | None, dtype: torch.dtype) -> torch.Tensor | None:
    """A float mask to add to attention scores (boolean True = not attended, as in PyTorch)."""
    if mask is None or mask.is_floating_point():
        return None if mask is None else mask.to(dtype)
    return torch.zeros(mask.shape, dtype=dtype, device=mask.device).masked_fill(mask, float("-inf"))


class LinearMultiheadAttention(nn.Module):
    """Drop-in for ``nn.MultiheadAttention`` whose projections are ``nn.Linear`` modules.

    Build it with :meth:`from_float`; it takes the same forward arguments (``key_padding_mask``,
    ``need_weights``, ``attn_mask``, ``average_attn_weights``, ``is_causal``) and supports
    ``batch_first`` True/False and unbatched inputs.
    """

    def __init__(
        self, embed_dim: int, num_heads: int, dropout: float, batch_first: bool,
        in_proj: nn.Linear | None, qkv_proj: tuple[nn.Linear, nn.Linear, nn.Linear] | None,
        out_proj: nn.Linear,
    ) -> None:
        super().__init__()
        self.embed_dim, self.num_heads = embed_dim, num_heads
        self.dropout, self.batch_first = dropout, batch_first
        self.in_proj = in_proj
        self.q_proj, self.k_proj, self.v_proj = qkv_proj if qkv_proj is not None else (None,) * 3
        self.out_proj = out_proj

    @staticmethod
    def supports(mha: nn.MultiheadAttention) -> bool:
        """False for the options not rebuilt here (``add_bias_kv``, ``add_zero_attn``)."""
        return mha.bias_k is None and mha.bias_v is None and not mha.add_zero_attn

    @classmethod
    def from_float(cls, mha: nn.MultiheadAttention) -> LinearMultiheadAttention:
        """The equivalent module; shares ``mha``'s weights (biases of separate projections are
        copies of the slices of ``in_proj_bias``)."""
        if mha._qkv_same_embed_dim:
            in_proj, qkv_proj = _linear(mha.in_proj_weight, mha.in_proj_bias), None
        else:
            biases = (None,) * 3 if mha.in_proj_bias is None else tuple(
                nn.Parameter(b.clone()) for b in mha.in_proj_bias.detach().chunk(3))
            weights = (mha.q_proj_weight, mha.k_proj_weight, mha.v_proj_weight)
            in_proj, qkv_proj = None, tuple(_linear(w, b) for w, b in zip(weights, biases))
        module = cls(mha.embed_dim, mha.num_heads, mha.dropout, mha.batch_first, in_proj,
                     qkv_proj, mha.out_proj)  # type: ignore[arg-type]
        return module.train(mha.training)

    def _project(self, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor
                 ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        if self.in_proj is None:
            return self.q_proj(query), self.k_proj(key), self.v_proj(value)
        if query is key and key is value:
            return self.in_proj(query).chunk(3, dim=-1)
        # cross-attention on a packed array: every input passes the whole array, the unused
        # columns are dropped (as hardware holding one packed matrix would)
        e = self.embed_dim
        q = self.in_proj(query)[..., :e]
        if key is value:
            k, v = self.in_proj(key)[..., e:].chunk(2, dim=-1)
            return q, k, v
        return q, self.in_proj(key)[..., e:2 * e], self.in_proj(value)[..., 2 * e:]

    def forward(
        self, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
        key_padding_mask: torch.Tensor | None = None, need_weights: bool = True,
        attn_mask: torch.Tensor | None = None, average_attn_weights: bool = True,
        is_causal: bool = False,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Same contract as ``nn.MultiheadAttention.forward``; ``is_causal`` is only a hint
        there that ``attn_mask`` is causal, and the mask is what is applied."""
        del is_causal
        unbatched = query.dim() == 2
        q, k, v = self._project(query, key, value)
        if unbatched:
            q, k, v = q.unsqueeze(1), k.unsqueeze(1), v.unsqueeze(1)
        elif self.batch_first:
            q, k, v = q.transpose(0, 1), k.transpose(0, 1), v.transpose(0, 1)
        # now (L, B, E) -> (B, H, L, D)
        length, batch, _ = q.shape
        heads, head_dim = self.num_heads, self.embed_dim // self.num_heads
        q, k, v = (t.reshape(t.shape[0], batch, heads, head_dim).permute(1, 2, 0, 3) for t in (q, k, v))
        mask = _additive_mask(attn_mask, q.dtype)
        if mask is not None and mask.dim() == 3:
            mask = mask.view(batch, heads, length, -1)
        padding = _additive_mask(key_padding_mask, q.dtype)
        if padding is not None:
            padding = padding.view(batch, 1, 1, -1)
            mask = padding if mask is None else mask + padding
        dropout = self.dropout if self.training else 0.0
        weights = None
        if need_weights:
            scores = (q * head_dim ** -0.5) @ k.transpose(-2, -1)
            attention = torch.softmax(scores if mask is None else scores + mask, dim=-1)
            attention = F.dropout(attention, p=dropout)
            out = attention @ v
            weights = attention.mean(dim=1) if average_attn_weights else attention
            weights = weights.squeeze(0) if unbatched else weights
        else:
            out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=dropout)
        out = self.out_proj(out.permute(2, 0, 1, 3).reshape(length, batch, self.embed_dim))
        if unbatched:
            return out.squeeze(1), weights
        return (out.transpose(0, 1) if self.batch_first else out), weights

    def extra_repr(self) -> str:
        return f"embed_dim={self.embed_dim}, num_heads={self.num_heads}, batch_first={self.batch_first}"


def swap_multihead_attention(root: nn.Module) -> None:
    """Replace every supported ``nn.MultiheadAttention`` under ``root`` (in place); the others
    stay and are reported digital."""
    for name, module in list(root.named_modules()):
        if type(module) is nn.MultiheadAttention and LinearMultiheadAttention.supports(module):
            parent_name, _, child = name.rpartition(".")
            setattr(root.get_submodule(parent_name), child, LinearMultiheadAttention.from_float(module))
