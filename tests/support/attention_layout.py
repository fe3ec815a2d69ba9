"""A plain-torch module with the host's CrossAttention layout, for the pure-torch tests of the units."""

from __future__ import annotations

import torch
from torch import nn


class FakeAttention(nn.Module):
    """The host's CrossAttention layout: to_q/to_k/to_v without bias, to_out = [Linear, Dropout]."""

    def __init__(self, dim: int, context_dim: int, heads: int = 8) -> None:
        super().__init__()
        self.heads = heads
        self.to_q = nn.Linear(dim, dim, bias=False)
        self.to_k = nn.Linear(context_dim, dim, bias=False)
        self.to_v = nn.Linear(context_dim, dim, bias=False)
        self.to_out = nn.Sequential(nn.Linear(dim, dim), nn.Dropout(0.0))

    def forward(self, x, context=None, value=None, transformer_options=None):
        context = x if context is None else context
        q, k, v = self.to_q(x), self.to_k(context), self.to_v(context if value is None else value)
        b, n, c = q.shape
        heads = [t.view(b, t.shape[1], self.heads, c // self.heads).transpose(1, 2) for t in (q, k, v)]
        out = torch.nn.functional.scaled_dot_product_attention(*heads)
        return self.to_out[1](self.to_out[0](out.transpose(1, 2).reshape(b, n, c)))
