"""The replica-batched LSTM, replica by replica, against torch.nn.LSTM (forward and gradients)."""

import pytest
import torch
from torch import nn

from reglab import layers as L
from reglab.model import STREAM_INIT, STREAM_NOISE, seed_generator
from reglab.recurrent import LSTM

S, B, T, F_IN, U = 3, 5, 6, 4, 7


def gens(seeds=range(S), stream=STREAM_NOISE):
    return [seed_generator(s, stream) for s in seeds]


def make_lstm(replicas=S, **kwargs):
    layer = LSTM(replicas, F_IN, U, **kwargs)
    layer.reset_parameters(gens(range(replicas), STREAM_INIT))
    with torch.no_grad():  # a non-trivial bias, so its copy into torch is checked too
        layer.bias.add_(0.1 * torch.randn(layer.bias.shape, generator=torch.Generator().manual_seed(9)))
    return layer


def torch_lstm(layer, r):
    """torch.nn.LSTM with replica r's weights: weight_ih = kernel.T, weight_hh = recurrent_kernel.T,
    bias_ih = bias, bias_hh = 0."""
    ref = nn.LSTM(F_IN, U, batch_first=True)
    with torch.no_grad():
        ref.weight_ih_l0.copy_(layer.kernel[r].T)
        ref.weight_hh_l0.copy_(layer.recurrent_kernel[r].T)
        ref.bias_ih_l0.copy_(layer.bias[r, 0])
        ref.bias_hh_l0.zero_()
    return ref


@pytest.mark.parametrize("return_sequences", [False, True])
def test_lstm_matches_torch_lstm_per_replica_forward_and_backward(return_sequences):
    torch.manual_seed(0)
    layer = make_lstm(return_sequences=return_sequences)
    x = torch.randn(S, B, T, F_IN, requires_grad=True)
    out = layer(x)
    assert out.shape == ((S, B, T, U) if return_sequences else (S, B, U))
    cot = torch.randn_like(out)
    gk, gr, gb, gx = torch.autograd.grad(out, [layer.kernel, layer.recurrent_kernel, layer.bias, x], cot)
    for r in range(S):
        ref = torch_lstm(layer, r)
        xr = x[r].detach().clone().requires_grad_()
        seq, (h_n, _) = ref(xr)
        ref_out = seq if return_sequences else h_n[0]
        torch.testing.assert_close(out[r], ref_out, atol=1e-5, rtol=1e-5)
        g_ih, g_hh, g_bih, g_x = torch.autograd.grad(
            ref_out, [ref.weight_ih_l0, ref.weight_hh_l0, ref.bias_ih_l0, xr], cot[r]
        )
        torch.testing.assert_close(gk[r], g_ih.T, atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(gr[r], g_hh.T, atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(gb[r, 0], g_bih, atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(gx[r], g_x, atol=1e-5, rtol=1e-5)


@pytest.fixture
def one_thread():
    """gradcheck runs hundreds of tiny double-precision matmuls: multi-threaded, they crawl on a busy CPU."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.mark.parametrize("per_gate", [False, True], ids=["shared", "per-gate-masks"])
def test_recurrence_backward_passes_gradcheck(per_gate, one_thread):
    """The hand-written backward through time against finite differences (double precision): one
    group of inputs for all gates, or (recurrent dropout) per gate its own inputs and state mask."""
    from reglab.recurrent import _Recurrence

    g = torch.Generator().manual_seed(3)
    t, s, f, u, b = 4, 2, 3, 3, 5
    groups = 4 if per_gate else 1
    x = torch.randn(t, s * groups, f, b, dtype=torch.double, generator=g, requires_grad=True)
    w = torch.randn(s * groups, f + u + 1, 4 * u // groups, dtype=torch.double, generator=g, requires_grad=True)
    mask = (torch.rand(s, 4, u, b, dtype=torch.double, generator=g) < 0.6).double() / 0.6 if per_gate else None
    assert mask is None or not torch.equal(mask[:, 0], mask[:, 1])  # the gates' masks differ
    assert torch.autograd.gradcheck(lambda a, c: _Recurrence.apply(a, c, mask), (x, w))
    # with inputs that need no gradient (the first layer's data), the weights' gradient is unchanged
    assert torch.autograd.gradcheck(lambda c: _Recurrence.apply(x.detach(), c, mask), (w,))


@pytest.mark.parametrize("dropout", [0.0, 0.4])
def test_lstm_with_per_gate_masks_passes_gradcheck(dropout, one_thread):
    """The whole layer in training with recurrent dropout (per-gate masks and weights arranged
    outside the recurrence) against finite differences: the same masks at every evaluation."""
    layer = LSTM(2, 3, 3, return_sequences=True, dropout=dropout, recurrent_dropout=0.4).double()
    layer.reset_parameters(gens(range(2), STREAM_INIT))
    g = torch.Generator().manual_seed(5)
    x = torch.randn(2, 4, 5, 3, dtype=torch.double, generator=g, requires_grad=True)
    params = (x, layer.kernel, layer.recurrent_kernel, layer.bias)

    def run(x_, kernel, recurrent_kernel, bias):
        layer.generators = gens(range(2))  # the same masks at every call
        weights = {"kernel": kernel, "recurrent_kernel": recurrent_kernel, "bias": bias}
        return torch.func.functional_call(layer, weights, (x_,))

    assert torch.autograd.gradcheck(run, params)


def test_lstm_last_output_is_the_last_step_of_the_sequence():
    x = torch.randn(S, B, T, F_IN)
    seq = make_lstm(return_sequences=True)(x)
    last = make_lstm(return_sequences=False)(x)
    torch.testing.assert_close(seq[:, :, -1], last)


def test_lstm_keras_initialisation():
    layer = LSTM(S, 10, 8)
    layer.reset_parameters(gens(stream=STREAM_INIT))
    # kernel: glorot_uniform with fans (in, 4*units)
    limit = (6 / (10 + 32)) ** 0.5
    assert layer.kernel.abs().max() <= limit
    assert layer.kernel.abs().max() > 0.9 * limit
    # recurrent kernel [units, 4*units]: Keras' Orthogonal makes its rows orthonormal, per replica
    for r in range(S):
        w = layer.recurrent_kernel[r].detach().double()
        torch.testing.assert_close(w @ w.T, torch.eye(8, dtype=torch.double), atol=1e-5, rtol=0)
    assert not torch.equal(layer.recurrent_kernel[0], layer.recurrent_kernel[1])
    # (Keras initialises the whole [units, 4*units] matrix, so the gates' [units, units] blocks are
    # not orthogonal one by one: their Gram matrices sum to the identity)
    blocks = layer.recurrent_kernel[0].detach().double().split(8, dim=1)
    torch.testing.assert_close(sum(b @ b.T for b in blocks), torch.eye(8, dtype=torch.double), atol=1e-5, rtol=0)
    # bias: zeros with the forget-gate block (second of i, f, c, o) at 1
    expected = torch.cat([torch.zeros(8), torch.ones(8), torch.zeros(16)])
    for r in range(S):
        assert torch.equal(layer.bias[r, 0].detach(), expected)


def test_lstm_replica_init_is_identical_alone_or_in_a_chunk():
    chunk = LSTM(3, F_IN, U)
    chunk.reset_parameters(gens([4, 7, 9], STREAM_INIT))
    alone = LSTM(1, F_IN, U)
    alone.reset_parameters(gens([7], STREAM_INIT))
    for p_chunk, p_alone in zip(chunk.parameters(), alone.parameters()):
        assert torch.equal(p_chunk[1], p_alone[0])


def _masks_from_grad(layer, x):
    """d sum(out) / d x: zero exactly where the LSTM's input dropout mask drops."""
    x = x.clone().requires_grad_()
    out = layer(x)
    (gx,) = torch.autograd.grad(out.sum(), x)
    return gx


@pytest.mark.parametrize("rate", [0.3, 0.5])
def test_lstm_input_dropout_mask_is_constant_over_time_and_off_in_eval(rate):
    layer = make_lstm(return_sequences=True, dropout=rate)
    layer.generators = gens()
    x = torch.randn(S, 200, T, F_IN)
    out = layer(x)
    # replica r's mask [B, 1, F] comes from its own generator: the undropped LSTM on masked inputs
    mask = torch.empty(S, 200, 1, F_IN)
    for r, g in enumerate(gens()):
        mask[r].uniform_(generator=g)
    mask = (mask < 1 - rate).float() / (1 - rate)
    clean = make_lstm(return_sequences=True)
    torch.testing.assert_close(out, clean(x * mask), atol=1e-6, rtol=1e-5)
    assert (mask == 0).float().mean().item() == pytest.approx(rate, abs=0.03)
    # next pass, a fresh mask: the gradient w.r.t. the inputs is zero where it drops, the same at every step
    gx = _masks_from_grad(layer, x)
    dropped = gx == 0
    assert torch.equal(dropped, dropped[:, :, :1].expand_as(dropped))
    assert dropped.float().mean().item() == pytest.approx(rate, abs=0.03)
    layer.eval()
    torch.testing.assert_close(layer(x), clean(x))


def keras_masks(g, batch, rate, features, count):
    """``count`` inverted-dropout masks ``[count, batch, features]`` drawn as Keras' cell draws them
    (one ``ones_like(step_input)`` mask after another), next from generator ``g``."""
    keep = 1 - rate
    return (torch.rand(count, batch, features, generator=g) < keep).float() / keep


def keras_lstm_cell_impl1(layer, r, x, in_masks, rec_masks):
    """Keras 3's ``LSTMCell.call`` with ``implementation=1`` for replica r in plain torch ops:
    gate k sees ``x_t * in_masks[k]`` and ``h_{t-1} * rec_masks[k]``, the same masks at every step.
    Returns every step's output ``[B, T, U]``."""
    k_i, k_f, k_c, k_o = layer.kernel[r].split(U, dim=1)
    r_i, r_f, r_c, r_o = layer.recurrent_kernel[r].split(U, dim=1)
    b_i, b_f, b_c, b_o = layer.bias[r, 0].split(U)
    h = c = torch.zeros(x.shape[0], U)
    outs = []
    for t in range(x.shape[1]):
        xt = x[:, t]
        i = torch.sigmoid(xt * in_masks[0] @ k_i + b_i + (h * rec_masks[0]) @ r_i)
        f = torch.sigmoid(xt * in_masks[1] @ k_f + b_f + (h * rec_masks[1]) @ r_f)
        c = f * c + i * torch.tanh(xt * in_masks[2] @ k_c + b_c + (h * rec_masks[2]) @ r_c)
        o = torch.sigmoid(xt * in_masks[3] @ k_o + b_o + (h * rec_masks[3]) @ r_o)
        h = o * torch.tanh(c)
        outs.append(h)
    return torch.stack(outs, dim=1)


@pytest.mark.parametrize("dropout", [0.0, 0.3])
def test_lstm_recurrent_dropout_draws_four_input_and_four_recurrent_masks_per_sequence(dropout):
    """With recurrent_dropout, Keras 3's cell (implementation 1) draws per gate i, f, c, o its own
    input mask (only with dropout) and its own recurrent mask, once per sequence: replica r, forward
    and gradients, against that cell in plain torch with masks drawn in Keras' order from r's stream."""
    rate, batch = 0.4, 40
    layer = make_lstm(return_sequences=True, dropout=dropout, recurrent_dropout=rate)
    layer.generators = gens()
    x = torch.randn(S, batch, T, F_IN, requires_grad=True)
    out = layer(x)
    cot = torch.randn_like(out)
    weights = [layer.kernel, layer.recurrent_kernel, layer.bias]
    grads = torch.autograd.grad(out, weights + [x], cot)
    for r, g in enumerate(gens()):
        in_masks = keras_masks(g, batch, dropout, F_IN, 4) if dropout > 0 else torch.ones(4, batch, F_IN)
        rec_masks = keras_masks(g, batch, rate, U, 4)
        assert all(not torch.equal(rec_masks[0], m) for m in rec_masks[1:])  # independent per gate
        xr = x[r].detach().clone().requires_grad_()
        ref = keras_lstm_cell_impl1(layer, r, xr, in_masks, rec_masks)
        torch.testing.assert_close(out[r], ref, atol=1e-5, rtol=1e-5)
        ref_grads = torch.autograd.grad(ref, weights + [xr], cot[r])
        for got, want in zip(grads[:3], ref_grads[:3]):
            torch.testing.assert_close(got[r], want[r], atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(grads[3][r], ref_grads[3], atol=1e-5, rtol=1e-5)
        # one mask shared by the gates would be measurably different
        shared = keras_lstm_cell_impl1(layer, r, xr, in_masks[:1].expand(4, -1, -1), rec_masks[:1].expand(4, -1, -1))
        assert (shared - ref).abs().max() > 1e-2
    layer.eval()
    torch.testing.assert_close(layer(x), make_lstm(return_sequences=True)(x))


def test_lstm_dropout_alone_uses_one_input_mask_for_all_gates():
    """Without recurrent_dropout (Keras' implementation 2), one input mask [B, F] per sequence,
    shared by the four gates: the Keras cell with the same mask for every gate."""
    batch = 40
    layer = make_lstm(return_sequences=True, dropout=0.3)
    layer.generators = gens()
    x = torch.randn(S, batch, T, F_IN)
    out = layer(x)
    for r, g in enumerate(gens()):
        mask = keras_masks(g, batch, 0.3, F_IN, 1).expand(4, -1, -1)
        ref = keras_lstm_cell_impl1(layer, r, x[r], mask, torch.ones(4, batch, U))
        torch.testing.assert_close(out[r], ref, atol=1e-5, rtol=1e-5)


def test_lstm_dropout_masks_are_per_replica_and_identical_alone_or_in_a_chunk():
    x = torch.randn(S, 20, T, F_IN)
    layer = make_lstm(dropout=0.3, recurrent_dropout=0.3)
    layer.generators = gens()
    out = layer(x)
    lone = LSTM(1, F_IN, U, dropout=0.3, recurrent_dropout=0.3)
    with torch.no_grad():
        for p_lone, p in zip(lone.parameters(), layer.parameters()):
            p_lone.copy_(p[1:2])
    lone.generators = gens([1])
    torch.testing.assert_close(lone(x[1:2]), out[1:2])
    assert not torch.equal(layer(x), out)  # fresh masks at every training pass


def test_dropout_layer_on_sequences_draws_a_fresh_mask_per_time_step_unlike_lstm_dropout():
    """The seed's "Dropout on the LSTM's inputs" is layers.Dropout on [S, B, T, F]: elementwise,
    so its mask differs across time steps; LSTM(dropout=...) reuses one mask at every step."""
    x = torch.ones(S, 64, T, F_IN)
    drop = L.Dropout(0.5)
    drop.generators = gens()
    elementwise = drop(x) != 0  # [S, B, T, F]
    assert not torch.equal(elementwise, elementwise[:, :, :1].expand_as(elementwise))
    differs = (elementwise != elementwise[:, :, :1]).any(dim=(1, 3))  # per replica and step
    assert differs[:, 1:].all()

    layer = make_lstm(return_sequences=True, dropout=0.5)
    layer.generators = gens()
    xs = torch.randn(S, 64, T, F_IN, requires_grad=True)
    (gx,) = torch.autograd.grad(layer(xs).sum(), xs)
    kept = gx != 0
    assert torch.equal(kept, kept[:, :, :1].expand_as(kept))  # the same mask at every step
    assert 0.3 < kept.float().mean().item() < 0.7
