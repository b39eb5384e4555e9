"""The LSTM recurrence with a hand-written backward through time (the fast path of lstm.LSTM).

Autograd through a Python time loop records ~15 small ops per step, and at batch 128 /
hidden 128 their bookkeeping costs more than the arithmetic. Here the forward runs the same
equations without recording and keeps the activations, and the backward walks the steps in
reverse with one matmul each; the weight gradients of all steps are one matmul each at the end.

On float32 CPU tensors the element-wise work of a step (forward and backward) is one pass of a
small C loop (lstm_cell.c via lstm_kernel.py); elsewhere, or without a C compiler, the same
arithmetic runs as PyTorch ops. Memory matters as much as arithmetic at this size: the input
projection is written straight into the gate buffer that each step then adds its matmul to,
and the C backward overwrites that buffer with the gradients, so a training step touches one
(T, B, 4H) block instead of three.
Tested against the autograd reference, `LSTM.recurrence`, in tests/test_part1_models.py.
"""
from __future__ import annotations

import torch

import lstm_kernel


def cell_forward(gates: torch.Tensor, c_prev: torch.Tensor, c: torch.Tensor, tanh_c: torch.Tensor,
                 h: torch.Tensor) -> None:
    """Equations (1)-(6) of one step in PyTorch ops: pre-activations `gates` (B, 4H) become the gates
    in place; c, tanh(c) and h (B, H) are written into the given tensors. lstm_cell.c does the same."""
    H = c.shape[1]
    g, i, f, o = gates.chunk(4, dim=1)
    g.tanh_()                                              # (1)
    gates[:, H:].sigmoid_()                                # i, f, o    (2)-(4)
    torch.addcmul(g * i, c_prev, f, out=c)                 # c = g*i + c_prev*f   (5)
    torch.tanh(c, out=tanh_c)
    torch.mul(tanh_c, o, out=h)                            # h = tanh(c)*o        (6)


class LSTMRecurrence(torch.autograd.Function):
    """h_T (B, H) from inputs x (T, B, D) and weights W_x (4H, D), b (4H,), W_h (4H, H); h_0 = c_0 = 0.

    Gate order along 4H is g, i, f, o, as in the assignment's equations (1)-(4).
    cpu_kernels=False keeps to PyTorch ops even where the C kernel could run (for comparisons).
    """

    @staticmethod
    def forward(ctx, x: torch.Tensor, W_x: torch.Tensor, b: torch.Tensor, W_h: torch.Tensor,
                cpu_kernels: bool = True) -> torch.Tensor:
        T, B, D = x.shape
        H = W_h.shape[1]
        # W_x x_t + b for all steps in one matmul, in the buffer the gates of each step will fill.
        gates = torch.addmm(b, x.reshape(T * B, D), W_x.t()).view(T, B, 4 * H)
        c = x.new_zeros(T + 1, B, H)                       # c[0] = c_0 = 0
        h = x.new_zeros(T + 1, B, H)                       # h[0] = h_0 = 0
        tanh_c = x.new_empty(T, B, H)
        ctx.use_c = cpu_kernels and lstm_kernel.usable(gates)
        if ctx.use_c:
            times_W_h = lstm_kernel.linear(W_h, B)         # h -> W_h h, all four gates
            hw = gates.new_zeros(B, 4 * H)                 # W_h h_0 = 0
            for t in range(T):
                if t > 0:
                    hw = times_W_h(h[t])
                # (1)-(6) in one pass over the step's numbers
                lstm_kernel.forward_step(gates[t], hw, c[t], c[t + 1], tanh_c[t], h[t + 1])
            return LSTMRecurrence._finish_forward(ctx, x, W_x, W_h, gates, c, h, tanh_c)
        W_hT = W_h.t()
        for t in range(T):
            if t > 0:  # h_0 = 0 adds nothing
                gates[t].addmm_(h[t], W_hT)                # + W_h h_{t-1}: all four gates, in place
            cell_forward(gates[t], c[t], c[t + 1], tanh_c[t], h[t + 1])
        return LSTMRecurrence._finish_forward(ctx, x, W_x, W_h, gates, c, h, tanh_c)

    @staticmethod
    def _finish_forward(ctx, x: torch.Tensor, W_x: torch.Tensor, W_h: torch.Tensor, gates: torch.Tensor,
                        c: torch.Tensor, h: torch.Tensor, tanh_c: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(x, W_x, W_h, gates, c, h, tanh_c)
        ctx.gates_consumed = False
        return h[-1].clone()

    @staticmethod
    def backward(ctx, grad_h: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        x, W_x, W_h, gates, c, h, tanh_c = ctx.saved_tensors
        T, B, H4 = gates.shape
        if ctx.use_c:
            if ctx.gates_consumed:
                raise RuntimeError("LSTM fast path: the C backward reuses its activations' memory, so it runs once "
                                   "per forward (no retain_graph); build the LSTM with cpu_kernels=False for that")
            ctx.gates_consumed = True
            grad_a = LSTMRecurrence._backward_c(W_h, gates, c, tanh_c, grad_h)
        else:
            grad_a = LSTMRecurrence._backward_torch(W_h, gates, c, tanh_c, grad_h)
        grad_a = grad_a.view(T * B, H4)                    # dLoss/d(pre-activations), all steps
        need = ctx.needs_input_grad
        # The weight gradients of all steps in one matmul each: sum_t da_t^T h_{t-1}, sum_t da_t^T x_t.
        grad_x = (grad_a @ W_x).view(T, B, -1) if need[0] else None
        grad_W_x = grad_a.t() @ x.reshape(T * B, -1) if need[1] else None
        grad_b = grad_a.sum(0) if need[2] else None
        # h_0 = 0: the first step adds nothing to dW_h, so its B rows are left out of the product.
        grad_W_h = grad_a[B:].t() @ h[1:T].reshape((T - 1) * B, H4 // 4) if need[3] else None
        return grad_x, grad_W_x, grad_b, grad_W_h, None

    @staticmethod
    def _backward_c(W_h: torch.Tensor, gates: torch.Tensor, c: torch.Tensor, tanh_c: torch.Tensor,
                    grad_h: torch.Tensor) -> torch.Tensor:
        """dLoss/d(pre-activations) (T, B, 4H), written over `gates`; one kernel call and one matmul a step."""
        T, B = gates.shape[:2]
        times_W_h_t = lstm_kernel.linear(W_h.t(), B)       # da -> W_h^T da
        dh = grad_h.contiguous()
        dc = torch.zeros_like(dh)                          # updated in place by the kernel
        for t in range(T - 1, -1, -1):
            lstm_kernel.backward_step(gates[t], c[t], tanh_c[t], dh, dc)
            if t > 0:
                dh = times_W_h_t(gates[t])                 # to h_{t-1}
        return gates

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
