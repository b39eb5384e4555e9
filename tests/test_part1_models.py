"""Part 1 models: equivalence with torch.nn.LSTM / nn.RNN, the hand-written backward, shapes."""
import contextlib
import shutil

import pytest
import torch
from torch import nn

import lstm_kernel
from lstm import LSTM
from lstm_bptt import LSTMRecurrence, backward_loop, forward_loop
from vanilla_rnn import VanillaRNN

# The ways our LSTM can run: the hand-written backward with the variants timed as fastest here, with
# each forced variant (the C cell does its own products; the torch cell takes either matmul), on plain
# PyTorch ops (cpu_kernels=False), and the autograd reference. Every path must give the same numbers,
# whichever variants a machine picks.
FORCED = {"c": ("c", "auto"), **{f"torch+{matmul}": ("torch", matmul) for matmul in ("onednn", "mm")}}
PATHS = {"timed": dict(hand_bptt=True), **{k: dict(hand_bptt=True) for k in FORCED},
         "torch_ops": dict(hand_bptt=True, cpu_kernels=False), "autograd": dict(hand_bptt=False)}
FAST_PATHS = [k for k in PATHS if k != "autograd"]


@contextlib.contextmanager
def running(path: str):
    """Force the path's variants, or skip where one cannot run here (test_part1_kernels fails for that on CI)."""
    cell, matmul = FORCED.get(path, ("auto", "auto"))
    if cell == "c" and lstm_kernel.load() is None:
        pytest.skip("the C cell is not available here")
    if matmul == "onednn" and not lstm_kernel.onednn_available():
        pytest.skip("oneDNN's private operators are not available here")
    with lstm_kernel.forcing(cell, matmul):
        yield

# Our gates are stacked g, i, f, o (the assignment's order); torch.nn.LSTM stacks i, f, g, o.
TORCH_ORDER = [1, 2, 0, 3]


def to_torch_order(w: torch.Tensor) -> torch.Tensor:
    return torch.cat([w.chunk(4, 0)[k] for k in TORCH_ORDER])


def grads(module: nn.Module) -> dict[str, torch.Tensor]:
    return {n: p.grad.clone() for n, p in module.named_parameters()}


@pytest.mark.parametrize("path", PATHS)
def test_lstm_matches_torch_lstm(path):
    torch.manual_seed(0)
    B, T, D, H, C = 5, 12, 3, 16, 10
    ours = LSTM(T, D, H, C, **PATHS[path])
    ref = nn.LSTM(D, H, batch_first=True)
    head = nn.Linear(H, C)
    with torch.no_grad():
        ref.weight_ih_l0.copy_(to_torch_order(ours.W_x))
        ref.weight_hh_l0.copy_(to_torch_order(ours.W_h))
        ref.bias_ih_l0.copy_(to_torch_order(ours.b))
        ref.bias_hh_l0.zero_()
        head.weight.copy_(ours.W_ph)
        head.bias.copy_(ours.b_p)
    x = torch.randn(B, T, D)
    y = torch.randint(0, C, (B,))

    with running(path):
        out = ours(x)
        nn.functional.cross_entropy(out, y).backward()
    ref_out = head(ref(x)[0][:, -1])
    torch.testing.assert_close(out, ref_out, atol=1e-5, rtol=1e-5)

    nn.functional.cross_entropy(ref_out, y).backward()
    g = grads(ours)
    torch.testing.assert_close(to_torch_order(g["W_x"]), ref.weight_ih_l0.grad, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(to_torch_order(g["W_h"]), ref.weight_hh_l0.grad, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(to_torch_order(g["b"]), ref.bias_ih_l0.grad, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(g["W_ph"], head.weight.grad, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(g["b_p"], head.bias.grad, atol=1e-5, rtol=1e-5)


def test_rnn_matches_torch_rnn():
    torch.manual_seed(0)
    B, T, D, H, C = 4, 15, 2, 12, 10
    ours = VanillaRNN(T, D, H, C)
    ref = nn.RNN(D, H, nonlinearity="tanh", batch_first=True)
    head = nn.Linear(H, C)
    with torch.no_grad():
        ref.weight_ih_l0.copy_(ours.W_hx)
        ref.weight_hh_l0.copy_(ours.W_hh)
        ref.bias_ih_l0.copy_(ours.b_h)
        ref.bias_hh_l0.zero_()
        head.weight.copy_(ours.W_ph)
        head.bias.copy_(ours.b_p)
    x = torch.randn(B, T, D)
    y = torch.randint(0, C, (B,))
    out, ref_out = ours(x), head(ref(x)[0][:, -1])
    torch.testing.assert_close(out, ref_out, atol=1e-5, rtol=1e-5)
    nn.functional.cross_entropy(out, y).backward()
    nn.functional.cross_entropy(ref_out, y).backward()
    torch.testing.assert_close(ours.W_hx.grad, ref.weight_ih_l0.grad, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(ours.W_hh.grad, ref.weight_hh_l0.grad, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(ours.b_h.grad, ref.bias_ih_l0.grad, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(ours.W_ph.grad, head.weight.grad, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("path", FAST_PATHS)
def test_hand_bptt_matches_autograd_reference(path):
    """The fast paths and the equation-by-equation autograd loop agree at a realistic size."""
    torch.manual_seed(1)
    model = LSTM(30, 10, 64, 10)
    x = torch.randn(32, 30, 10, requires_grad=True)  # the input's gradient is checked too
    y = torch.randint(0, 10, (32,))
    results = []
    for p in (path, "autograd"):
        vars(model).update(PATHS[p])
        model.zero_grad()
        x.grad = None
        with running(p):
            out = model(x)
            nn.functional.cross_entropy(out, y).backward()
        results.append((out.detach(), {**grads(model), "x": x.grad.clone()}))
    (out_fast, g_fast), (out_ref, g_ref) = results
    torch.testing.assert_close(out_fast, out_ref, atol=1e-6, rtol=1e-5)
    for name in g_ref:
        torch.testing.assert_close(g_fast[name], g_ref[name], atol=1e-6, rtol=1e-5)


@pytest.mark.skipif(shutil.which("cc") is None, reason="no C compiler: the LSTM runs on PyTorch ops")
def test_c_cell_builds_and_handles_saturated_gates():
    """With a compiler the kernel must build (else the fast path silently falls back); its exp
    approximation must also be right where tanh/sigmoid saturate and beyond its clamps."""
    assert lstm_kernel.load() is not None
    B, H = 3, 40
    pre = torch.linspace(-120, 120, B * 4 * H).reshape(B, 4 * H)
    c_prev = torch.linspace(-3, 3, B * H).reshape(B, H)
    gates, cs, tanh_c, hs = pre.clone()[None], torch.zeros(2, B, H), torch.empty(1, B, H), torch.zeros(2, B, H)
    cs[0] = c_prev  # the state before the step (h_0 = 0: no product)
    lstm_kernel.forward(gates, torch.randn(H, 4 * H), cs, tanh_c, hs)
    gates, c, h = gates[0], cs[1], hs[1]
    assert torch.isfinite(gates).all() and torch.isfinite(h).all()
    a_g, a_i, a_f, a_o = pre.chunk(4, 1)
    ref = torch.cat([a_g.tanh(), a_i.sigmoid(), a_f.sigmoid(), a_o.sigmoid()], 1)
    torch.testing.assert_close(gates, ref, atol=1e-6, rtol=1e-5)
    ref_c = ref[:, :H] * ref[:, H:2 * H] + c_prev * ref[:, 2 * H:3 * H]
    torch.testing.assert_close(c, ref_c, atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(h, ref_c.tanh() * ref[:, 3 * H:], atol=1e-6, rtol=1e-5)


@pytest.mark.parametrize("threads", [1, 2, 3])
def test_c_cell_products_match_torch_and_do_not_depend_on_threads(threads):
    """The C cell's own matrix kernel has register tiles of 8 rows by 32 columns: a batch and hidden size
    that are not multiples of those exercise the tiles and both edges. Each row is computed alike
    however the rows are split over threads, so the numbers are the same bit for bit."""
    if lstm_kernel.load() is None:
        pytest.skip("the C cell is not available here")
    torch.manual_seed(0)
    T, B, H = 4, 37, 44                                   # B: 4 tiles and 5 rows; 4H = 176, H = 44: tiles and edges
    pre, W_h = torch.randn(T, B, 4 * H), torch.randn(4 * H, H) / H ** 0.5
    grad_h = torch.randn(B, H)
    results = {}
    for cell, n in (("torch", 1), ("c", 1), ("c", threads)):
        gates, c, h, tanh_c = pre.clone(), torch.zeros(T + 1, B, H), torch.zeros(T + 1, B, H), torch.empty(T, B, H)
        saved = torch.get_num_threads()
        torch.set_num_threads(n)
        try:
            forward_loop(gates, c, h, tanh_c, W_h, cell, "mm")
            grad_a = backward_loop(gates, c, tanh_c, W_h, grad_h, cell, "mm").clone()
        finally:
            torch.set_num_threads(saved)
        results[cell, n] = (h, c, grad_a)
    for got, want in zip(results["c", 1], results["torch", 1]):
        torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-4)
    for got, want in zip(results["c", threads], results["c", 1]):
        assert torch.equal(got, want)


@pytest.mark.parametrize("impl", ["onednn", "mm", None])
def test_linear_refreshes_its_packed_weight(impl):
    """lstm_kernel.linear keeps one packed buffer per shape: each call must pack the weight it is given."""
    if impl == "onednn" and not lstm_kernel.onednn_available():
        pytest.skip("oneDNN's private operators are not available here")
    torch.manual_seed(0)
    x = torch.randn(6, 8)
    for _ in range(3):  # the first call packs from scratch, the later ones copy into the same buffer
        w = torch.randn(12, 8)
        torch.testing.assert_close(lstm_kernel.linear(w, 6, impl)(x), x @ w.t(), atol=1e-5, rtol=1e-5)


def test_length_one_gives_zero_recurrent_gradient():
    """With one step, h_0 = 0 is all W_h ever multiplies: its gradient is zero, not an error."""
    model = LSTM(1, 10, 16, 10)
    nn.functional.cross_entropy(model(torch.randn(4, 1, 10)), torch.randint(0, 10, (4,))).backward()
    assert torch.count_nonzero(model.W_h.grad) == 0 and torch.count_nonzero(model.W_x.grad) > 0


def test_gradcheck_recurrence_and_model():
    torch.manual_seed(0)
    T, B, D, H = 6, 3, 2, 4
    x = torch.randn(T, B, D, dtype=torch.double, requires_grad=True)
    W_x = torch.randn(4 * H, D, dtype=torch.double, requires_grad=True)
    b = torch.randn(4 * H, dtype=torch.double, requires_grad=True)
    W_h = torch.randn(4 * H, H, dtype=torch.double, requires_grad=True)
    assert torch.autograd.gradcheck(LSTMRecurrence.apply, (x, W_x, b, W_h))

    model = LSTM(5, 2, 3, 4).double()
    x = torch.randn(2, 5, 2, dtype=torch.double, requires_grad=True)
    assert torch.autograd.gradcheck(model, (x,))


@pytest.mark.parametrize("cls", [LSTM, VanillaRNN])
@pytest.mark.parametrize("batch", [1, 3, 64])
def test_shapes_any_batch(cls, batch):
    model = cls(9, 10, 8, 10)
    assert model(torch.randn(batch, 9, 10)).shape == (batch, 10)
    scalar_inputs = cls(9, 1, 8, 10)
    assert scalar_inputs(torch.randn(batch, 9)).shape == (batch, 10)  # (B, T) when input_dim is 1
    assert scalar_inputs(torch.randn(batch, 9, 1)).shape == (batch, 10)


def test_forget_bias_initialisation():
    model = LSTM(5, 1, 8, 10, forget_bias=3.0)
    f_bias = model.b.chunk(4)[2]  # g, i, f, o
    assert (f_bias > 3.0 - 1 / 8 ** 0.5 - 1e-6).all() and (model.b.chunk(4)[0].abs() <= 1 / 8 ** 0.5).all()


def test_no_batch_size_or_device_in_model():
    model = LSTM(5, 1, 8, 10)
    assert not [v for v in vars(model).values() if isinstance(v, torch.device)]
    assert "batch_size" not in vars(model)


@pytest.mark.parametrize("path", FAST_PATHS)
def test_hand_bptt_refuses_a_second_backward(path):
    """The C backward overwrites its saved activations, so a retained graph gets a clear error, not wrong
    numbers; both cells keep that contract on float32 CPU tensors, so code behaves alike whichever cell
    a machine's timing picks. cpu_kernels=False (like float64, or a GPU) allows it."""
    model = LSTM(5, 1, 8, 10, **PATHS[path])
    with running(path):
        loss = model(torch.randn(4, 5)).sum()
        loss.backward(retain_graph=True)
        if path == "torch_ops":
            loss.backward()
            return
        with pytest.raises(RuntimeError, match="hand_bptt=False"):
            loss.backward()


@pytest.mark.parametrize("path", FAST_PATHS)
def test_hand_bptt_refuses_double_backward(path):
    """The hand-written backward is once_differentiable: a gradient of a gradient fails with a clear message."""
    model = LSTM(5, 1, 8, 10, **PATHS[path])
    with running(path):
        loss = model(torch.randn(4, 5)).square().sum()
        (grad_W_h,) = torch.autograd.grad(loss, model.W_h, create_graph=True)
        with pytest.raises(RuntimeError, match="once_differentiable"):
            grad_W_h.sum().backward()


def test_reference_allows_double_backward():
    """hand_bptt=False, which the error messages point to, does what the fast path refuses."""
    model = LSTM(5, 1, 8, 10, hand_bptt=False)
    loss = model(torch.randn(4, 5)).square().sum()
    (grad_W_h,) = torch.autograd.grad(loss, model.W_h, create_graph=True)
    grad_W_h.sum().backward()
    assert model.W_h.grad is not None and torch.isfinite(model.W_h.grad).all()


@pytest.mark.parametrize("path", FAST_PATHS)
def test_kept_activation_buffers_are_never_shared_between_graphs(path):
    """Two forwards before their backwards, then more steps on the buffers the backwards gave back:
    every gradient equals the autograd reference's (a graph reading another's activations would not)."""
    torch.manual_seed(2)
    model = LSTM(9, 3, 16, 10)
    xs = [torch.randn(4, 9, 3) for _ in range(4)]
    y = torch.randint(0, 10, (4,))

    def step_grads(p: str, batch: list[torch.Tensor]) -> dict[str, torch.Tensor]:
        vars(model).update(PATHS[p])
        model.zero_grad()
        with running(p):
            loss = sum(nn.functional.cross_entropy(model(x), y) for x in batch)  # forwards first
            loss.backward()
        return grads(model)

    for batch in (xs[:2], xs[2:3], xs[1:4]):
        fast, ref = step_grads(path, batch), step_grads("autograd", batch)
        for name in ref:
            torch.testing.assert_close(fast[name], ref[name], atol=1e-6, rtol=1e-5)
