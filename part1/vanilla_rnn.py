"""Vanilla RNN baseline: h_t = tanh(W_hx x_t + W_hh h_{t-1} + b_h), p_t = W_ph h_t + b_p, h_0 = 0.

forward returns the logits of the last step; the loss (cross-entropy) applies the softmax.
"""
from __future__ import annotations

import math

import torch
from torch import nn


class VanillaRNN(nn.Module):
    """The baseline of train.py --model rnn: one tanh layer, read to the end, then one linear read-out."""

    def __init__(self, seq_length: int, input_dim: int, hidden_dim: int, output_dim: int) -> None:
        super().__init__()
        self.seq_length = seq_length
        self.input_dim = input_dim
        self.hidden_dim = hidden_dim
        self.W_hx = nn.Parameter(torch.empty(hidden_dim, input_dim))
        self.W_hh = nn.Parameter(torch.empty(hidden_dim, hidden_dim))
        self.b_h = nn.Parameter(torch.empty(hidden_dim))
        self.W_ph = nn.Parameter(torch.empty(output_dim, hidden_dim))
        self.b_p = nn.Parameter(torch.empty(output_dim))
        bound = 1 / math.sqrt(hidden_dim)  # as torch.nn.RNN; see lstm.py for why not N(0, 1)
        for p in self.parameters():
            nn.init.uniform_(p, -bound, bound)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x (B, T, D), or (B, T) when D == 1 -> logits (B, output_dim)."""
        if x.dim() == 2:
            x = x.unsqueeze(-1)
        # Input projections of all steps at once, (T, B, H); unbind keeps backward linear in T.
        xw = (x @ self.W_hx.t() + self.b_h).transpose(0, 1)
        h = xw.new_zeros(x.shape[0], self.hidden_dim)
        for xw_t in xw.unbind(0):
            h = torch.tanh(xw_t + h @ self.W_hh.t())
        return h @ self.W_ph.t() + self.b_p
