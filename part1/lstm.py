"""LSTM written from the assignment's equations (no torch.nn.LSTM).

    g_t = tanh(W_gx x_t + W_gh h_{t-1} + b_g)        (1)
    i_t = sigmoid(W_ix x_t + W_ih h_{t-1} + b_i)     (2)
    f_t = sigmoid(W_fx x_t + W_fh h_{t-1} + b_f)     (3)
    o_t = sigmoid(W_ox x_t + W_oh h_{t-1} + b_o)     (4)
    c_t = g_t * i_t + c_{t-1} * f_t                  (5)
    h_t = tanh(c_t) * o_t                            (6)
    p_t = W_ph h_t + b_p                             (7)
    y_t = softmax(p_t)                               (8)

with h_0 = c_0 = 0. Only the last step is classified; forward returns the logits p_T and the
loss (cross-entropy) applies the softmax. The four gates are stacked in one matrix each, in
the order g, i, f, o: W_x = [W_gx; W_ix; W_fx; W_ox] (4H, D), W_h likewise (4H, H), b (4H,).

`LSTM.recurrence` below is these equations under autograd, step by step: the readable reference.
By default (hand_bptt=True) a different implementation of the same arithmetic runs instead:
lstm_bptt.py, with a hand-written backward through time and, on float32 CPU tensors, each step
as one call of a C cell where that times faster than PyTorch ops (lstm_kernel.py). Tests hold it to the reference
within float rounding. LSTM(..., hand_bptt=False) (train.py --lstm_impl reference) runs the
reference itself.
"""
from __future__ import annotations

import math

import torch
from torch import nn

from lstm_bptt import LSTMRecurrence


class LSTM(nn.Module):
    """Equations (1)-(8) with h_0 = c_0 = 0; forward returns the logits p_T.

    hand_bptt=True (the default) does NOT run `recurrence` under autograd: it runs
    lstm_bptt.LSTMRecurrence, the same arithmetic with a hand-written backward (faster, and on the
    CPU with the variants lstm_kernel.py times as fastest; its backward runs once per forward).
    hand_bptt=False runs `recurrence`, the reference. cpu_kernels=False keeps the hand-written
    backward on plain PyTorch ops (no C cell, no oneDNN).
    """

    def __init__(self, seq_length: int, input_dim: int, hidden_dim: int, output_dim: int,
                 forget_bias: float = 1.0, chrono: bool = False, hand_bptt: bool = True,
                 cpu_kernels: bool = True) -> None:
        super().__init__()
        self.seq_length = seq_length
        self.input_dim = input_dim
        self.hidden_dim = hidden_dim
        self.hand_bptt = hand_bptt  # the default fast path, lstm_bptt.py; False: `recurrence` under autograd
        self.cpu_kernels = cpu_kernels
        H = hidden_dim
        self.W_x = nn.Parameter(torch.empty(4 * H, input_dim))
        self.W_h = nn.Parameter(torch.empty(4 * H, H))
        self.b = nn.Parameter(torch.empty(4 * H))
        self.W_ph = nn.Parameter(torch.empty(output_dim, H))
        self.b_p = nn.Parameter(torch.empty(output_dim))
        self.reset_parameters(forget_bias, chrono)

    def reset_parameters(self, forget_bias: float = 1.0, chrono: bool = False) -> None:
        # PyTorch's own LSTM scheme, U(-1/sqrt(H), 1/sqrt(H)): pre-activations start small, so the
        # gates start near 0.5 with useful gradients (N(0, 1) saturates them and training crawls).
        # The forget bias starts at `forget_bias` (Jozefowicz et al., 2015) so c_t is kept, not
        # halved, at every step: the digit to remember survives long sequences from the start.
        # chrono=True instead draws b_f = log(U(1, T - 1)) and sets b_i = -b_f (Tallec & Ollivier,
        # 2018): memory time scales spread up to the sequence length, and small input gates keep
        # the cell from filling up (and tanh(c) from saturating) over ~100 steps.
        bound = 1 / math.sqrt(self.hidden_dim)
        for p in self.parameters():
            nn.init.uniform_(p, -bound, bound)
        H = self.hidden_dim
        with torch.no_grad():
            if chrono:
                b_f = torch.log(torch.empty(H).uniform_(1, max(self.seq_length - 1, 2)))
                self.b[H:2 * H] = -b_f
                self.b[2 * H:3 * H] = b_f
            else:
                self.b[2 * H:3 * H] += forget_bias

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x (B, T, D), or (B, T) when D == 1 -> logits (B, output_dim)."""
        if x.dim() == 2:
            x = x.unsqueeze(-1)
        x = x.transpose(0, 1).contiguous()               # (T, B, D): each step's inputs in one block
        if self.hand_bptt:
            h = LSTMRecurrence.apply(x, self.W_x, self.b, self.W_h, self.cpu_kernels)
        else:
            h = self.recurrence(x)
        return h @ self.W_ph.t() + self.b_p              # (7); softmax (8) is in the loss

    def recurrence(self, x: torch.Tensor) -> torch.Tensor:
        """Equations (1)-(6), one step at a time under autograd: the readable reference. x (T, B, D) -> h_T."""
        T, B, D = x.shape
        # Input projections of all steps in one matmul, before the time loop: (T, B, 4H).
        xw = torch.addmm(self.b, x.reshape(T * B, D), self.W_x.t()).view(T, B, -1)
        h = xw.new_zeros(B, self.hidden_dim)
        c = xw.new_zeros(B, self.hidden_dim)
        # unbind/chunk, not x[t] or a[:, k*H:], so backward stays linear in T.
        for xw_t in xw.unbind(0):
            a_g, a_i, a_f, a_o = (xw_t + h @ self.W_h.t()).chunk(4, dim=1)
            g = torch.tanh(a_g)                          # (1)
            i = torch.sigmoid(a_i)                       # (2)
            f = torch.sigmoid(a_f)                       # (3)
            o = torch.sigmoid(a_o)                       # (4)
            c = g * i + c * f                            # (5)
            h = torch.tanh(c) * o                        # (6)
        return h
