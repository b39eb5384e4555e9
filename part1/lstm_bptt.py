"""The LSTM recurrence with a hand-written backward through time (the fast path of lstm.LSTM).

Autograd through a Python time loop records ~15 small ops per step, and at batch 128 /
hidden 128 their bookkeeping costs more than the arithmetic. Here the forward runs the same
equations without recording and keeps the activations, and the backward walks the steps in
reverse with one matmul each; the weight gradients of all steps are one matmul each at the end.

On float32 CPU tensors each step can run as one call of lstm_cell.c: the product with W_h and the
element-wise work, the batch rows split over the threads, so a step waits for the threads once
rather than once per operation; lstm_kernel.py times this against the PyTorch ops (with the
product through oneDNN or torch.mm) on the machine at hand and keeps the faster (`plan`).
Elsewhere the PyTorch ops run.
Memory matters as much as arithmetic at this size: the input projection is written straight into
the gate buffer that each step then adds its product to, and the C backward overwrites that
buffer with the gradients, so a training step touches one (T, B, 4H) block instead of three.
Tested against the autograd reference, `LSTM.recurrence`, in tests/test_part1_models.py, with
every choice of variants.
"""
from __future__ import annotations

from typing import Callable

import torch
from torch.autograd.function import once_differentiable

import lstm_kernel

CELL_TIMING_STEPS = 2  # steps per timed call when choosing the cell: one product each way, as in training


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


def forward_loop(gates: torch.Tensor, c: torch.Tensor, h: torch.Tensor, tanh_c: torch.Tensor, W_h: torch.Tensor,
                 cell: str, matmul: str) -> None:
    """Equations (1)-(6) for all steps. gates (T, B, 4H) holds W_x x_t + b and leaves holding g, i, f, o;
    c, h (T + 1, B, H) with c[0] = h[0] = 0 and tanh_c (T, B, H) are filled in."""
    T, B, H4 = gates.shape
    if cell == "c":  # all steps in one call, the same equations
        lstm_kernel.forward(gates, W_h.t().contiguous(), c, tanh_c, h)
        return
    times_W_h = lstm_kernel.linear(W_h, B, matmul)        # h -> W_h h, all four gates
    W_hT = W_h.t()
    for t in range(T):
        if t > 0 and matmul == "mm":                       # h_0 = 0 adds nothing
            gates[t].addmm_(h[t], W_hT)                    # + W_h h_{t-1}: all four gates, in place
        elif t > 0:
            gates[t] += times_W_h(h[t])
        cell_forward(gates[t], c[t], c[t + 1], tanh_c[t], h[t + 1])


def backward_loop(gates: torch.Tensor, c: torch.Tensor, tanh_c: torch.Tensor, W_h: torch.Tensor,
                  grad_h: torch.Tensor, cell: str, matmul: str) -> torch.Tensor:
    """dLoss/d(pre-activations) (T, B, 4H) from dLoss/dh_T; the "c" cell writes it over `gates`."""
    if cell == "c":
        return lstm_kernel.backward(gates, c, tanh_c, grad_h, W_h.contiguous())  # all steps in one call, over gates
    times_W_h_t = lstm_kernel.linear(W_h.t(), gates.shape[1], matmul)  # da -> W_h^T da, to h_{t-1}
    return _backward_torch(gates, c, tanh_c, grad_h, times_W_h_t)


def plan(batch_size: int, hidden_dim: int) -> tuple[str, str, str]:
    """(cell, forward matmul, backward matmul) for a float32 CPU recurrence: the one place the fast path's
    variants are chosen (lstm_kernel.decide times each once per shape and keeps it). The "c" cell does
    its own products: ("c", "c", "c")."""
    B, H = batch_size, hidden_dim
    cell = lstm_kernel.decide("cell", (B, H), lambda: cell_candidates(B, H, *torch_matmuls(B, H)))
    return ("c", "c", "c") if cell == "c" else ("torch", *torch_matmuls(B, H))


def torch_matmuls(batch_size: int, hidden_dim: int) -> tuple[str, str]:
    """The products of the "torch" cell: (h_{t-1} W_h^T, da_t W_h), each "onednn" or "mm"."""
    B, H = batch_size, hidden_dim
    return lstm_kernel.matmul_choice(B, H, 4 * H), lstm_kernel.matmul_choice(B, 4 * H, H)


def cell_candidates(batch_size: int, hidden_dim: int, mm_forward: str, mm_backward: str
                    ) -> dict[str, Callable[[], object]]:
    """A short forward and backward pass with each cell, as training runs them (the "torch" cell with
    these products), on inputs from a private generator (the global RNG, and so seeded training,
    stays untouched)."""
    T, B, H = CELL_TIMING_STEPS, batch_size, hidden_dim
    rng = torch.Generator().manual_seed(0)
    pre = torch.randn(T, B, 4 * H, generator=rng)
    W_h = torch.randn(4 * H, H, generator=rng) / H ** 0.5
    grad_h = torch.randn(B, H, generator=rng)
    gates, tanh_c = torch.empty_like(pre), torch.empty(T, B, H)
    c, h = torch.zeros(T + 1, B, H), torch.zeros(T + 1, B, H)

    def run(cell: str) -> Callable[[], object]:
        mm = ("c", "c") if cell == "c" else (mm_forward, mm_backward)

        def forward_backward() -> torch.Tensor:
            gates.copy_(pre)
            forward_loop(gates, c, h, tanh_c, W_h, cell, mm[0])
            return backward_loop(gates, c, tanh_c, W_h, grad_h, cell, mm[1])
        return forward_backward
    return {cell: run(cell) for cell in lstm_kernel.LAYERS["cell"]}


class LSTMRecurrence(torch.autograd.Function):
    """h_T (B, H) from inputs x (T, B, D) and weights W_x (4H, D), b (4H,), W_h (4H, H); h_0 = c_0 = 0.

    Gate order along 4H is g, i, f, o, as in the assignment's equations (1)-(4).
    cpu_kernels=False keeps to PyTorch ops even where lstm_kernel's variants could run (for comparisons).
    The backward cannot itself be differentiated (once_differentiable). On float32 CPU tensors with
    cpu_kernels it also runs once per forward (no retain_graph): the C cell's backward reuses the
    activations' memory, and both cells keep that contract there, so that code behaves alike
    whichever cell the timing picks. LSTM(..., hand_bptt=False) has neither limit.
    """

    @staticmethod
    def forward(ctx, x: torch.Tensor, W_x: torch.Tensor, b: torch.Tensor, W_h: torch.Tensor,
                cpu_kernels: bool = True) -> torch.Tensor:
        T, B, D = x.shape
        H = W_h.shape[1]
        ctx.key = (T, B, H, x.dtype, x.device)
        gates, c, h, tanh_c = take_buffers(*ctx.key)
        # W_x x_t + b for all steps in one matmul, in the buffer the gates of each step will fill.
        torch.addmm(b, x.reshape(T * B, D), W_x.t(), out=gates.view(T * B, 4 * H))
        ctx.once = cpu_kernels and lstm_kernel.applies(gates)
        cell, mm_forward, ctx.mm_backward = plan(B, H) if ctx.once else ("torch", "mm", "mm")
        forward_loop(gates, c, h, tanh_c, W_h, cell, mm_forward)
        ctx.cell = cell
        ctx.save_for_backward(x, W_x, W_h, gates, c, h, tanh_c)
        ctx.backward_done = False
        return h[-1].clone()

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_h: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        if ctx.once and ctx.backward_done:
            raise RuntimeError("LSTM hand-written backward: on float32 CPU tensors it runs once per forward (its "
                               "activations' memory is reused), so no retain_graph; build the LSTM with "
                               "hand_bptt=False (or cpu_kernels=False) for that")
        ctx.backward_done = True
        x, W_x, W_h, gates, c, h, tanh_c = ctx.saved_tensors
        T, B, H4 = gates.shape
        grad_a = backward_loop(gates, c, tanh_c, W_h, grad_h.contiguous(), ctx.cell, ctx.mm_backward)
        grad_a = grad_a.view(T * B, H4)                    # dLoss/d(pre-activations), all steps
        need = ctx.needs_input_grad
        # The weight gradients of all steps in one matmul each: sum_t da_t^T h_{t-1}, sum_t da_t^T x_t.
        grad_x = (grad_a @ W_x).view(T, B, -1) if need[0] else None
        grad_W_x = grad_a.t() @ x.reshape(T * B, -1) if need[1] else None
        grad_b = grad_a.sum(0) if need[2] else None
        # h_0 = 0: the first step adds nothing to dW_h, so its B rows are left out of the product.
        grad_W_h = grad_a[B:].t() @ h[1:T].reshape((T - 1) * B, H4 // 4) if need[3] else None
        if ctx.once:  # the backward has run and may not run again: the next forward can have the buffers
            give_back_buffers(ctx.key, (gates, c, h, tanh_c))
        return grad_x, grad_W_x, grad_b, grad_W_h, None


# Activations of a training step, kept for the next step of the same shape. Fresh blocks of several
# megabytes each step cost page faults (filling a new 5 MB gate buffer costs more than the step's
# input projection itself); reused ones are already mapped. A set is in the pool only between a
# backward that finished with it and the next forward that takes it, so a graph never shares its
# activations: a forward whose backward never comes simply lets its set go.
_pool: dict[tuple, tuple[torch.Tensor, ...]] = {}


def take_buffers(T: int, B: int, H: int, dtype: torch.dtype, device: torch.device) -> tuple[torch.Tensor, ...]:
    """gates (T, B, 4H), c and h (T + 1, B, H) with c[0] = h[0] = 0, tanh_c (T, B, H)."""
    kept = _pool.pop((T, B, H, dtype, device), None)
    if kept is not None:
        return kept  # c[0] and h[0] are only ever read, so they are still 0
    new = dict(dtype=dtype, device=device)
    return (torch.empty(T, B, 4 * H, **new), torch.zeros(T + 1, B, H, **new), torch.zeros(T + 1, B, H, **new),
            torch.empty(T, B, H, **new))


def give_back_buffers(key: tuple, buffers: tuple[torch.Tensor, ...]) -> None:
    """Keep the two shapes trained on most recently (a full batch and an epoch's last, smaller one)."""
    _pool[key] = buffers
    while len(_pool) > 2:
        del _pool[next(iter(_pool))]  # the oldest


def _backward_torch(gates: torch.Tensor, c: torch.Tensor, tanh_c: torch.Tensor, grad_h: torch.Tensor,
                    times_W_h_t: Callable[[torch.Tensor], torch.Tensor]) -> torch.Tensor:
    """The same as lstm_kernel.backward (the C cell) with PyTorch ops, for any device and dtype; `gates` is left as it was."""
    T, B, H4 = gates.shape
    H = H4 // 4
    g, i, f, o = gates.chunk(4, dim=2)                     # each (T, B, H)
    # Chain-rule factors that do not depend on the incoming gradient, for all steps at once:
    #   da_g = dc * i * (1 - g^2)        da_i = dc * g * i(1 - i)
    #   da_f = dc * c_prev * f(1 - f)    da_o = dh * tanh(c) * o(1 - o)
    #   dc  += dh * o * (1 - tanh(c)^2)  (through h = tanh(c) * o)
    # Written into one buffer with few temporaries: at T = 99 these are 6.5 MB each.
    k = torch.empty_like(gates)
    k_g, k_i, k_f, k_o = k.chunk(4, dim=2)
    sig = gates[..., H:]                                   # i, f, o side by side
    torch.mul(sig, 1 - sig, out=k[..., H:])                # sigmoid' for the three at once
    k_i.mul_(g)
    k_f.mul_(c[:-1])
    k_o.mul_(tanh_c)
    torch.mul(g, g, out=k_g).neg_().add_(1).mul_(i)
    k_c = 1 - tanh_c * tanh_c
    k_c.mul_(o)
    k = k.view(T, B, 4, H)
    grad_a = torch.empty_like(k)                           # dLoss/d(pre-activation), per step
    dh = grad_h
    dc = torch.zeros_like(dh)
    for t in range(T - 1, -1, -1):
        dc.addcmul_(dh, k_c[t])
        torch.mul(dc.unsqueeze(1), k[t, :, :3], out=grad_a[t, :, :3])  # g, i, f
        torch.mul(dh, k[t, :, 3], out=grad_a[t, :, 3])                 # o
        dh = times_W_h_t(grad_a[t].view(B, H4))            # to h_{t-1}
        dc = dc * f[t]                                     # to c_{t-1}
    return grad_a.view(T, B, H4)
