"""The LSTM recurrence with a hand-written backward through time (the fast path of lstm.LSTM).

Autograd through a Python time loop records ~15 small ops per step, and at batch 128 /
hidden 128 their bookkeeping costs more than the arithmetic. Here the forward runs the same
equations without recording and keeps the activations; the backward computes every factor
that does not depend on the incoming gradient for all steps at once, so the reverse loop is
five small ops and one matmul a step, and the weight gradient of W_h is one matmul at the end.
On a float32 CPU tensor, the element-wise work of each step (forward and backward) runs as one
fused C loop (lstm_cell.c via lstm_kernel.py), so a step is one matmul and one kernel call each
way; elsewhere, or without a C compiler, the same arithmetic runs as PyTorch ops.
Tested against the autograd reference, `LSTM.recurrence`, in tests/test_part1_models.py.
"""
from __future__ import annotations

import torch

import lstm_kernel


class LSTMRecurrence(torch.autograd.Function):
    """h_T from the input projections xw (T, B, 4H) = W_x x_t + b and the recurrent weights W_h (4H, H).

    c_cell=False keeps to PyTorch ops even where the C kernel could run (for comparisons).

    Gate order along 4H is g, i, f, o, as in the assignment's equations (1)-(4).
    """

    @staticmethod
    def forward(ctx, xw: torch.Tensor, W_h: torch.Tensor, c_cell: bool = True) -> torch.Tensor:
        T, B, H4 = xw.shape
        H = H4 // 4
        gates = torch.empty_like(xw)                       # (T, B, 4H): g, i, f, o after their nonlinearity
        c = xw.new_zeros(T + 1, B, H)                      # c[0] = c_0 = 0
        h = xw.new_zeros(T + 1, B, H)                      # h[0] = h_0 = 0
        tanh_c = xw.new_empty(T, B, H)
        W_hT = W_h.t()
        ctx.use_c = c_cell and lstm_kernel.usable(xw)
        for t in range(T):
            # All four pre-activations in one matmul, written in place: out= into a strided
            # slice would make every step go through a temporary and a copy.
            torch.addmm(xw[t], h[t], W_hT, out=gates[t])
            if ctx.use_c:  # (1)-(6) in one pass over the step's numbers
                lstm_kernel.forward_step(gates[t], c[t], c[t + 1], tanh_c[t], h[t + 1])
                continue
            g, i, f, o = gates[t].chunk(4, dim=1)
            g.tanh_()                                      # (1)
            gates[t, :, H:].sigmoid_()                     # i, f, o    (2)-(4)
            torch.addcmul(g * i, c[t], f, out=c[t + 1])    # c = g*i + c_prev*f   (5)
            torch.tanh(c[t + 1], out=tanh_c[t])
            torch.mul(tanh_c[t], o, out=h[t + 1])          # h = tanh(c)*o        (6)
        ctx.save_for_backward(W_h, gates, c, h, tanh_c)
        return h[T].clone()

    @staticmethod
    def _backward_c(W_h: torch.Tensor, gates: torch.Tensor, c: torch.Tensor, tanh_c: torch.Tensor,
                    grad_h: torch.Tensor) -> torch.Tensor:
        """dLoss/d(pre-activations) (T, B, 4H), one kernel call and one matmul a step."""
        T, B, H4 = gates.shape
        grad_a = torch.empty_like(gates)
        dh = grad_h.contiguous()
        dc = torch.zeros_like(dh)                          # updated in place by the kernel
        for t in range(T - 1, -1, -1):
            lstm_kernel.backward_step(gates[t], c[t], tanh_c[t], dh, dc, grad_a[t])
            dh = grad_a[t] @ W_h                           # to h_{t-1}
        return grad_a

    @staticmethod
    def backward(ctx, grad_h: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, None]:
        W_h, gates, c, h, tanh_c = ctx.saved_tensors
        T, B, H4 = gates.shape
        backward_steps = LSTMRecurrence._backward_c if ctx.use_c else LSTMRecurrence._backward_torch
        grad_a = backward_steps(W_h, gates, c, tanh_c, grad_h)
        # Weight gradient of all steps in one matmul: sum_t da_t^T h_{t-1}.
        grad_W_h = grad_a.reshape(T * B, H4).t() @ h[:T].reshape(T * B, H4 // 4)
        return grad_a, grad_W_h, None

    @staticmethod
    def _backward_torch(W_h: torch.Tensor, gates: torch.Tensor, c: torch.Tensor, tanh_c: torch.Tensor,
                        grad_h: torch.Tensor) -> torch.Tensor:
        """The same as _backward_c with PyTorch ops, for any device and dtype."""
        T, B, H4 = gates.shape
        H = H4 // 4
        g, i, f, o = gates.chunk(4, dim=2)                 # each (T, B, H)
        # Chain-rule factors that do not depend on the incoming gradient, for all steps at once:
        #   da_g = dc * i * (1 - g^2)        da_i = dc * g * i(1 - i)
        #   da_f = dc * c_prev * f(1 - f)    da_o = dh * tanh(c) * o(1 - o)
        #   dc  += dh * o * (1 - tanh(c)^2)  (through h = tanh(c) * o)
        # Written into one buffer with few temporaries: at T = 99 these are 6.5 MB each.
        k = torch.empty_like(gates)
        k_g, k_i, k_f, k_o = k.chunk(4, dim=2)
        sig = gates[..., H:]                               # i, f, o side by side
        torch.mul(sig, 1 - sig, out=k[..., H:])            # sigmoid' for the three at once
        k_i.mul_(g)
        k_f.mul_(c[:-1])
        k_o.mul_(tanh_c)
        torch.mul(g, g, out=k_g).neg_().add_(1).mul_(i)
        k_c = 1 - tanh_c * tanh_c
        k_c.mul_(o)
        k = k.view(T, B, 4, H)
        grad_a = torch.empty_like(k)                       # dLoss/d(pre-activation), per step
        dh = grad_h.contiguous()
        dc = torch.zeros_like(dh)
        for t in range(T - 1, -1, -1):
            dc.addcmul_(dh, k_c[t])
            torch.mul(dc.unsqueeze(1), k[t, :, :3], out=grad_a[t, :, :3])  # g, i, f
            torch.mul(dh, k[t, :, 3], out=grad_a[t, :, 3])                 # o
            dh = grad_a[t].view(B, H4) @ W_h               # to h_{t-1}
            dc = dc * f[t]                                 # to c_{t-1}
        return grad_a.view(T, B, H4)
