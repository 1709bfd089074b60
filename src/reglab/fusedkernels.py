"""Compiled loops of the fused engine (:mod:`reglab.fused`): a whole block of epochs of every replica
of a model in one call, for its two families -- a one-hidden-layer binary MLP
(:func:`train_block`) and an LSTM with a binary head (:func:`train_lstm_block`) -- and the
per-replica random numbers they draw.

Compiled by numba (``cache=True``: once per machine, then loaded from ``__pycache__``). numba's cache
follows the source file of each compiled function, not of the functions it inlines: every compiled
function lives in this one file, so that editing any of them recompiles all. Each replica is trained
by the same loops on its own slices of the arrays, one replica after another, so a replica's numbers
do not depend on which other replicas share its model. Floating-point sums may be reordered for
vector instructions (``fastmath`` reassociation and contraction only: NaN and inf keep their IEEE
meaning, a diverged replica still shows as NaN). Loops that should vectorise index arrays from 0
(slices, not offsets): numba wraps negative indices, and an index it cannot prove non-negative keeps
a loop scalar.

Random numbers: each replica has one 64-bit SplitMix64 state (Steele, Lea & Flood 2014) that every
draw advances. A uniform is the top 24 bits of a draw scaled to [0, 1) (exact in float32). Normals
come in pairs, two from each draw by the Box-Muller transform (its two 32-bit halves give the radius
and the angle), with float32 polynomial log, sin and cos (Cephes'), so that the loop over a block of
normals vectorises: ~0.9 ns a normal on one core (2026-12), where the ziggurat method, which branches
per draw, took ~3.7 ns in the loops. A block (an op's batch, a parameter tensor's gradient noise) is
drawn in one go; an odd-sized block leaves its last draw's second normal unused.

The LSTM loop: per time step the four gates of all the batch's sequences are one matrix product
``W.T @ [x_t; h_{t-1}; 1]`` (BLAS, through numba's ``np.dot``), feature-major so that each gate's
values for the batch are one contiguous run; the kernel's gradient is summed step by step.
Why (one core, the rnn study's LSTM(32) on sequences of 20 steps, 100 training and 300 test
sequences; 2026-12): the autograd engine spends ~5.7 ms a replica-epoch, most of it in per-step
operations on ``[S, 4U, B]`` tensors that leave the cache (its test pass keeps 20 steps of gates of
300 sequences); torch's own fused (oneDNN) LSTM, one seed at a time, ~6.3 ms; this loop ~1.8 ms. Its
gate nonlinearities are vectorised rational approximations (:func:`tanh`), ~0.3 ns each instead of
~4 ns for a scalar ``exp``: Eigen's float32 tanh (the one TensorFlow and XLA use on CPUs), within
3e-7 of tanh; the sigmoid is ``(1 + tanh(x / 2)) / 2``, within 1.5e-7. The autograd engine uses
torch's own functions: the two engines agree to that precision per step.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit

FASTMATH = {"reassoc", "contract", "nsz"}
JIT = dict(cache=True, fastmath=FASTMATH, nogil=True, error_model="numpy")
#: the per-element and per-sample helpers of the loops: inlined into them (a call per random number or
#: sample costs more than its work); those called once per batch or epoch are calls (compiled once,
#: not into every loop: ~25% less compile time)
INLINE = dict(JIT, inline="always")

# input ops (before the hidden Dense) and hidden ops (between it and the head): codes
OP_NOISE, OP_DROPOUT, OP_RELU = 0, 1, 2

_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_MIX1 = np.uint64(0xBF58476D1CE4E5B9)
_MIX2 = np.uint64(0x94D049BB133111EB)
_U24 = np.float32(1.0 / (1 << 24))


#: float32 natural log (Cephes' logf): log(m) = m - m^2/2 + m^3 P(m) for the mantissa m - 1 in
#: [sqrt(1/2) - 1, sqrt(2) - 1], P's coefficients from the highest power; ln 2 split in two parts
LOG_P = (7.0376836292e-2, -1.1514610310e-1, 1.1676998740e-1, -1.2420140846e-1, 1.4249322787e-1,
         -1.6668057665e-1, 2.0000714765e-1, -2.4999993993e-1, 3.3333331174e-1)
LOG_LN2_HI, LOG_LN2_LO = 0.693359375, -2.12194440e-4
#: float32 sin and cos on [-pi/4, pi/4] (Cephes' sinf and cosf): the coefficients of x^3, x^5, x^7
#: and of x^4, x^6, x^8
SIN_P = (-1.6666654611e-1, 8.3321608736e-3, -1.9515295891e-4)
COS_P = (4.166664568298827e-2, -1.388731625493765e-3, 2.443315711809948e-5)

_F = np.float32
_LP = tuple(_F(c) for c in LOG_P)
_SP, _CP = tuple(_F(c) for c in SIN_P), tuple(_F(c) for c in COS_P)
_U32 = np.uint32


@njit(**INLINE)
def next_u64(s):
    """Advance a SplitMix64 state ``s``: returns the new state and its 64-bit draw. (The loops keep
    a replica's state in a local variable: a state in memory would put a store-to-load round trip
    into every draw.)"""
    s = s + _GOLDEN
    z = (s ^ (s >> np.uint64(30))) * _MIX1
    z = (z ^ (z >> np.uint64(27))) * _MIX2
    return s, z ^ (z >> np.uint64(31))


@njit(**INLINE)
def uniform(s):
    """The new state and a float32 uniform on [0, 1): the top 24 bits of one draw."""
    s, z = next_u64(s)
    return s, np.float32(z >> np.uint64(40)) * _U24


@njit(**INLINE)
def log32(x):
    """Natural log of a positive normal float32 ``x``, within 1.3e-7 relative (branch-free: it vectorises)."""
    bits = _F(x).view(_U32)
    e = _F(np.int32(bits >> _U32(23)) - 126)
    m = _U32((bits & _U32(0x007FFFFF)) | _U32(0x3F000000)).view(np.float32)  # in [1/2, 1)
    low = m < _F(0.70710678118654752)
    e = e - _F(1.0) if low else e
    m = m + m - _F(1.0) if low else m - _F(1.0)
    z = m * m
    p = ((((((((_LP[0] * m + _LP[1]) * m + _LP[2]) * m + _LP[3]) * m + _LP[4]) * m + _LP[5]) * m + _LP[6]) * m
          + _LP[7]) * m + _LP[8])
    return m + (p * m * z + _F(LOG_LN2_LO) * e - _F(0.5) * z) + _F(LOG_LN2_HI) * e


@njit(**INLINE)
def normal_pair(s):
    """The new state and two independent standard normals (float32) from one draw, by the Box-Muller
    transform: radius ``sqrt(-2 log u1)`` from the draw's high 32 bits (u1 in (0, 1), so at most
    6.7), angle ``2 pi u2`` from its low 32 bits, reduced to a quarter turn in integers."""
    s, z = next_u64(s)
    u1 = _F(_U32(z >> np.uint64(32))) * _F(2.0**-32) + _F(2.0**-33)
    radius = np.sqrt(_F(-2.0) * log32(u1))
    k = _U32(z & np.uint64(0xFFFFFFFF))  # the angle in units of 2^-32 turns
    quarter = _U32(_U32(k + _U32(1 << 29)) >> _U32(30))  # the nearest quarter turn, 0..3 (4 wraps to 0)
    a = _F(np.int32(_U32(k - _U32(quarter << _U32(30))))) * _F(math.pi / 2 * 2.0**-30)  # in [-pi/4, pi/4)
    a2 = a * a
    sin = a + a * a2 * (_SP[0] + a2 * (_SP[1] + a2 * _SP[2]))
    cos = _F(1.0) - _F(0.5) * a2 + a2 * a2 * (_CP[0] + a2 * (_CP[1] + a2 * _CP[2]))
    odd = quarter & _U32(1)
    c = sin if odd else cos  # cos(a + q pi/2) is cos, -sin, -cos, sin; sin(a + q pi/2) is sin, cos, -sin, -cos
    t = cos if odd else sin
    return (s, radius * c * (_F(1.0) - _F(_U32(quarter + _U32(1)) & _U32(2))),
            radius * t * (_F(1.0) - _F(quarter & _U32(2))))


@njit(**JIT)
def add_normals(s, out, std):
    """Add ``std`` times standard normals to the 1-D float32 ``out``, in order, drawing from random state
    ``s``: a pair per draw (:func:`normal_pair`), the last draw's second normal unused when ``out``'s
    size is odd. Returns the new state."""
    n = out.shape[0]
    for j in range(n // 2):
        s, x, y = normal_pair(s)
        out[2 * j] += x * std
        out[2 * j + 1] += y * std
    if n % 2:
        s, x, y = normal_pair(s)
        out[n - 1] += x * std
    return s


@njit(**JIT)
def fill_log(x, out):
    """``out[i] = log32(x[i])`` (for tests)."""
    for i in range(x.shape[0]):
        out[i] = log32(x[i])


@njit(**JIT)
def fill_uniform(state, r, out):
    """Fill the 1-D float32 ``out`` with replica ``r``'s next uniforms, in order (advancing ``state[r]``)."""
    s = state[r]
    for i in range(out.shape[0]):
        s, out[i] = uniform(s)
    state[r] = s


@njit(**JIT)
def fill_normal(state, r, out):
    """Fill the 1-D float32 ``out`` with replica ``r``'s next standard normals, in order (advancing
    ``state[r]``), as the loops draw one op's or one parameter tensor's noise (:func:`add_normals`)."""
    out[:] = 0.0
    state[r] = add_normals(state[r], out, _F(1.0))


@njit(**JIT)
def _apply_ops(a, nb, codes, params, scales, r, s, saved, training):
    """Apply the elementwise ops ``codes`` to rows ``a[:nb]`` in place (noise and dropout in training
    only, drawing from random state ``s``; returns the new state); with ``saved`` (training), store
    each op's derivative factor (dropout mask, ReLU 0/1) in ``saved[k]`` for the backward pass."""
    for k in range(codes.shape[0]):
        code = codes[k]
        if code == OP_RELU:
            for b in range(nb):
                row = a[b]
                if training and saved.shape[0] > 0:
                    mask = saved[k, b]
                    for u in range(row.shape[0]):
                        positive = row[u] > 0
                        mask[u] = np.float32(1.0) if positive else np.float32(0.0)
                        row[u] = row[u] if positive else np.float32(0.0)
                else:
                    for u in range(row.shape[0]):
                        row[u] = max(row[u], np.float32(0.0))
        elif not training:
            continue
        elif code == OP_NOISE:
            std = params[k, r]
            if std != 0:  # the batch's rows in one draw of normals
                s = add_normals(s, a.reshape(a.size)[:nb * a.shape[1]], std)
        else:  # OP_DROPOUT: params is the keep probability, scales 1 / keep
            keep = params[k, r]
            scale = scales[k, r]
            if keep != 1:
                for b in range(nb):
                    row = a[b]
                    mask = saved[k, b] if saved.shape[0] > 0 else row
                    for u in range(row.shape[0]):
                        s, x = uniform(s)
                        m = scale if x < keep else np.float32(0.0)
                        if saved.shape[0] > 0:
                            mask[u] = m
                        row[u] *= m
    return s


@njit(**JIT)
def gradient_noise(grad, bounds, eta, gamma, step, s):
    """Add gradient noise (Neelakantan et al. 2015) of variance ``eta / (1 + step)^gamma`` to every
    entry of ``grad``, each parameter tensor ``grad[bounds[i]:bounds[i + 1]]`` one draw of normals in
    order, drawing from random state ``s`` (none when ``eta`` is 0); returns the new state."""
    if eta != 0:
        std = np.float32(math.sqrt(eta / (1.0 + step) ** gamma))
        for i in range(bounds.shape[0] - 1):
            s = add_normals(s, grad[bounds[i]:bounds[i + 1]], std)
    return s


@njit(**JIT)
def update(th, m, v, grad, optimizer, lr, step, beta_1, beta_2, epsilon, momentum):
    """One optimizer step of the parameters ``th`` from ``grad``, ``step`` (1-based) being its number:
    Keras Adam (``optimizer`` 0; moments ``m``, ``v``) or Keras SGD with momentum (1; velocity in ``m``:
    v = mu v - lr g; w += v)."""
    if optimizer == 0:
        c1, c2, eps = np.float32(1.0 - beta_1), np.float32(1.0 - beta_2), np.float32(epsilon)
        alpha = np.float32(lr * (math.sqrt(1.0 - beta_2 ** step) / (1.0 - beta_1 ** step)))
        for i in range(th.shape[0]):
            gi = grad[i]
            mi = m[i] + (gi - m[i]) * c1
            vi = v[i] + (gi * gi - v[i]) * c2
            m[i] = mi
            v[i] = vi
            th[i] -= alpha * (mi / (np.sqrt(vi) + eps))
    else:
        rate, mu = np.float32(lr), np.float32(momentum)
        for i in range(th.shape[0]):
            vel = mu * m[i] - rate * grad[i]
            m[i] = vel
            th[i] += vel


@njit(**INLINE)
def _bce(logit, y):
    """Binary cross-entropy from a logit (torch's stable form), in float64."""
    return max(logit, 0.0) - logit * y + math.log1p(math.exp(-abs(logit)))


@njit(**INLINE)
def _dense(x, theta, f_in, units, out):
    """``out = x @ w1 + b1`` for one sample ``x`` [F] (F >= 1); ``theta`` holds w1 (row-major [F, U])
    then b1. Two input features per pass over ``out`` (the bias with the first one or two): a pass
    costs its loads and stores, and the circles have two features, so theirs is one pass."""
    b1 = theta[f_in * units:(f_in + 1) * units]
    w0, x0 = theta[0:units], x[0]
    first = 2 - f_in % 2  # the features of the first pass: one when F is odd
    if first == 1:
        for u in range(units):
            out[u] = b1[u] + x0 * w0[u]
    else:
        w1, x1 = theta[units:2 * units], x[1]
        for u in range(units):
            out[u] = b1[u] + x0 * w0[u] + x1 * w1[u]
    for f in range(first, f_in, 2):
        wa, wb = theta[f * units:(f + 1) * units], theta[(f + 1) * units:(f + 2) * units]
        xa, xb = x[f], x[f + 1]
        for u in range(units):
            out[u] += xa * wa[u] + xb * wb[u]


@njit(**INLINE)
def _dense_backward(x, gz, grad, f_in, units):
    """Add one sample's gradients of ``x @ w1 + b1`` (``x`` [F], the output's gradient ``gz`` [U]) to
    ``grad``, laid out as ``theta`` (:func:`_dense`): as there, two features per pass, the bias's
    gradient with the first one or two."""
    gb1 = grad[f_in * units:(f_in + 1) * units]
    gw0, x0 = grad[0:units], x[0]
    first = 2 - f_in % 2
    if first == 1:
        for u in range(units):
            gb1[u] += gz[u]
            gw0[u] += x0 * gz[u]
    else:
        gw1, x1 = grad[units:2 * units], x[1]
        for u in range(units):
            gb1[u] += gz[u]
            gw0[u] += x0 * gz[u]
            gw1[u] += x1 * gz[u]
    for f in range(first, f_in, 2):
        gwa, gwb = grad[f * units:(f + 1) * units], grad[(f + 1) * units:(f + 2) * units]
        xa, xb = x[f], x[f + 1]
        for u in range(units):
            gwa[u] += xa * gz[u]
            gwb[u] += xb * gz[u]


@njit(**JIT)
def _head(h, g, nb, b2, w2, gw2, gb2, targets, rows, hid_codes, hid_params, saved, r, loss_sum,
          correct):
    """The ``Dense(1, sigmoid)`` head on a batch's hidden rows ``h[:nb]`` (the samples ``rows`` of
    ``targets``), in training, for both loops: returns the epoch's running ``loss_sum`` and
    ``correct`` with the batch's losses (its mean times its size) and correct predictions added;
    adds the head's gradients of the batch mean loss to ``gw2`` [U] and ``gb2[0]``, and writes the
    gradient reaching the hidden layer, back through the hidden ops (their saved masks; noise
    passes the gradient as it is), to ``g[:nb]``."""
    units = w2.shape[0]
    for b in range(nb):
        hb = h[b]
        acc = np.float32(0.0)
        for u in range(units):
            acc += hb[u] * w2[u]
        logit = acc + b2
        t = targets[rows[b]]
        loss_sum += _bce(np.float64(logit), np.float64(t))
        if (logit > 0) == (t > 0.5):
            correct += 1
        # d(batch mean loss)/d(logit), then the head's gradients and the hidden one
        d = (np.float32(1.0) / (np.float32(1.0) + np.float32(math.exp(-logit))) - t) / np.float32(nb)
        gb2[0] += d
        gb = g[b]
        for u in range(units):
            gw2[u] += hb[u] * d
            gb[u] = d * w2[u]
    for k in range(hid_codes.shape[0] - 1, -1, -1):
        code = hid_codes[k]
        if code == OP_NOISE or (code == OP_DROPOUT and hid_params[k, r] == 1):
            continue
        for b in range(nb):
            gb, mask = g[b], saved[k, b]
            for u in range(units):
                gb[u] *= mask[u]
    return loss_sum, correct


@njit(**JIT)
def _evaluate(x, y, theta, f_in, units, relu, z):
    """Inference-mode mean loss and accuracy of one replica (parameters ``theta``) on ``x`` [N, F],
    ``y`` [N]: its hidden ops reduce to a ReLU (``relu``) or nothing, as noise and dropout are off."""
    n = x.shape[0]
    w2 = theta[(f_in + 1) * units:(f_in + 2) * units]
    b2 = theta[(f_in + 2) * units]
    loss = 0.0
    correct = 0
    for i in range(n):
        acc = np.float32(0.0)
        if f_in == 2 and relu:  # the circles: the Dense, ReLU and head in one pass, nothing stored
            w0, w1, b1 = theta[0:units], theta[units:2 * units], theta[2 * units:3 * units]
            x0, x1 = x[i, 0], x[i, 1]
            for u in range(units):
                acc += max(b1[u] + x0 * w0[u] + x1 * w1[u], np.float32(0.0)) * w2[u]
        elif relu:
            _dense(x[i], theta, f_in, units, z)
            for u in range(units):
                acc += max(z[u], np.float32(0.0)) * w2[u]
        else:
            _dense(x[i], theta, f_in, units, z)
            for u in range(units):
                acc += z[u] * w2[u]
        logit = acc + b2
        loss += _bce(np.float64(logit), np.float64(y[i]))
        if (logit > 0) == (y[i] > 0.5):
            correct += 1
    return loss / n, correct / n


@njit(**JIT)
def train_block(first, last, updates, orders, x_train, y_train, x_test, y_test, theta, m, v,
                in_codes, in_params, in_scales, hid_codes, hid_params, hid_scales,
                lr, optimizer, beta_1, beta_2, epsilon, momentum,
                max_norm, label_flip, grad_eta, grad_gamma, bounds, batch_size, state, metrics):
    """Train epochs ``first`` to ``last - 1`` of every replica (Keras ``fit`` semantics, as
    :class:`reglab.module.ReplicaClassifier` does with autograd) and write each epoch's train loss,
    train accuracy (the training-mode forward passes), test loss and test accuracy (inference mode)
    to ``metrics[epoch - first, :, r]``.

    Shapes: ``orders`` [E, S, N] int64; data [S or 1, N, F] and [S or 1, N] (with S rows, row r is
    replica r's); ``theta`` [S, P]: each replica's parameters, flat: the hidden kernel (row-major
    [F, U]), its bias [U], the head's kernel [U] and bias [1]; ``m``, ``v`` likewise, the optimizer's
    moments (Adam's m and v; SGD's velocity in m); op codes [ops] and per-replica op parameters
    [ops, S]; ``lr``, ``max_norm`` (inf: none), ``label_flip``, ``grad_eta`` [S]; ``optimizer`` 0 Adam,
    1 SGD; ``bounds``: the parameter tensors' offsets in ``theta`` and its size (each tensor's gradient
    noise is one draw, :func:`gradient_noise`); ``updates``: the optimizer steps taken before
    ``first``, the same for every replica.
    """
    n_rep, n_par = theta.shape
    f_in = x_train.shape[2]
    units = (n_par - 1) // (f_in + 2)
    o_w2, o_b2 = (f_in + 1) * units, (f_in + 2) * units
    n = orders.shape[2]
    bmax = min(batch_size, n)
    a0 = np.empty((bmax, f_in), np.float32)
    h = np.empty((bmax, units), np.float32)
    g = np.empty((bmax, units), np.float32)
    saved = np.empty((hid_codes.shape[0], bmax, units), np.float32)
    no_saved = np.empty((0, 1, 1), np.float32)
    targets = np.empty(n, np.float32)
    grad = np.empty(n_par, np.float32)
    z = np.empty(units, np.float32)
    relu = False
    for k in range(hid_codes.shape[0]):
        if hid_codes[k] == OP_RELU:
            relu = True
    for r in range(n_rep):
        xr, yr = x_train[r if x_train.shape[0] > 1 else 0], y_train[r if y_train.shape[0] > 1 else 0]
        th, mr, vr = theta[r], m[r], v[r]
        w2, gw2 = th[o_w2:o_b2], grad[o_w2:o_b2]
        step = updates
        s = state[r]
        for epoch in range(first, last):
            # this epoch's labels: each flipped with probability label_flip (a uniform per label)
            p = label_flip[r]
            for i in range(n):
                targets[i] = yr[i]
                if p != 0:
                    s, x = uniform(s)
                    if x < p:
                        targets[i] = np.float32(1.0) - yr[i]
            loss_sum = 0.0
            correct = 0
            for lo in range(0, n, batch_size):
                nb = min(batch_size, n - lo)
                # forward: the inputs and their ops, the hidden Dense and its ops, the head
                for b in range(nb):
                    row = orders[epoch, r, lo + b]
                    for f in range(f_in):
                        a0[b, f] = xr[row, f]
                s = _apply_ops(a0, nb, in_codes, in_params, in_scales, r, s, no_saved, True)
                for b in range(nb):
                    _dense(a0[b], th, f_in, units, h[b])
                s = _apply_ops(h, nb, hid_codes, hid_params, hid_scales, r, s, saved, True)
                for i in range(n_par):
                    grad[i] = 0.0
                loss_sum, correct = _head(h, g, nb, th[o_b2], w2, gw2, grad[o_b2:], targets,
                                          orders[epoch, r, lo:lo + nb], hid_codes, hid_params, saved, r,
                                          loss_sum, correct)
                for b in range(nb):  # the Dense's gradients
                    _dense_backward(a0[b], g[b], grad, f_in, units)
                s = gradient_noise(grad, bounds, grad_eta[r], grad_gamma, step, s)
                step += 1
                update(th, mr, vr, grad, optimizer, lr[r], step, beta_1, beta_2, epsilon, momentum)
                # Keras MaxNorm on the hidden kernel: w * clip(norm, 0, c) / (1e-7 + norm), per unit
                c = max_norm[r]
                if not math.isinf(c):
                    for u in range(units):
                        z[u] = 0.0
                    for f in range(f_in):
                        w = th[f * units:(f + 1) * units]
                        for u in range(units):
                            z[u] += w[u] * w[u]
                    for u in range(units):
                        norm = np.sqrt(z[u])
                        z[u] = min(norm, np.float32(c)) / (norm + np.float32(1e-7))
                    for f in range(f_in):
                        w = th[f * units:(f + 1) * units]
                        for u in range(units):
                            w[u] *= z[u]
            row_m = epoch - first
            metrics[row_m, 0, r] = loss_sum / n
            metrics[row_m, 1, r] = correct / n
            tl, ta = _evaluate(x_test[r if x_test.shape[0] > 1 else 0], y_test[r if y_test.shape[0] > 1 else 0],
                               th, f_in, units, relu, z)
            metrics[row_m, 2, r] = tl
            metrics[row_m, 3, r] = ta
        state[r] = s


# ----------------------------------------------------------------------------- the LSTM family
#: Eigen's ``generic_fast_tanh_float``: inputs clamped to +-CLAMP, odd numerator and even denominator
#: polynomials in x (coefficients of x, x^3, ... and of 1, x^2, ...); below TINY tanh(x) is x.
TANH_CLAMP = 7.90531110763549805
TANH_TINY = 0.0004
TANH_NUM = (4.89352455891786e-03, 6.37261928875436e-04, 1.48572235717979e-05, 5.12229709037114e-08,
            -8.60467152213735e-11, 2.00018790482477e-13, -2.76076847742355e-16)
TANH_DEN = (4.89352518554385e-03, 2.26843463243900e-03, 1.18534705686654e-04, 1.19825839466702e-06)

_A = tuple(np.float32(c) for c in TANH_NUM)
_B = tuple(np.float32(c) for c in TANH_DEN)
_CLAMP, _TINY = np.float32(TANH_CLAMP), np.float32(TANH_TINY)
_HALF, _ONE = np.float32(0.5), np.float32(1.0)


@njit(**INLINE)
def tanh(x):
    """float32 tanh by Eigen's rational approximation (branch-free, so loops of it vectorise)."""
    x = min(max(x, -_CLAMP), _CLAMP)
    x2 = x * x
    p = _A[6]
    p = p * x2 + _A[5]
    p = p * x2 + _A[4]
    p = p * x2 + _A[3]
    p = p * x2 + _A[2]
    p = p * x2 + _A[1]
    p = p * x2 + _A[0]
    q = _B[3]
    q = q * x2 + _B[2]
    q = q * x2 + _B[1]
    q = q * x2 + _B[0]
    return x if abs(x) < _TINY else (p * x) / q


@njit(**INLINE)
def sigmoid(x):
    """float32 logistic sigmoid, ``(1 + tanh(x / 2)) / 2``."""
    return _HALF + _HALF * tanh(_HALF * x)


@njit(**JIT)
def fill_tanh(x, out):
    """``out[i] = tanh(x[i])`` (for tests)."""
    for i in range(x.shape[0]):
        out[i] = tanh(x[i])


@njit(**JIT)
def fill_sigmoid(x, out):
    """``out[i] = sigmoid(x[i])`` (for tests)."""
    for i in range(x.shape[0]):
        out[i] = sigmoid(x[i])


@njit(**INLINE)
def _activate(z, m):
    """A step's gate activations in place: ``z`` [4 * m], feature-major (gate i's m values, then f's,
    c's, o's; m = units x sequences) becomes sigmoid(i), sigmoid(f), tanh(c), sigmoid(o)."""
    i_f, g, o = z[:2 * m], z[2 * m:3 * m], z[3 * m:4 * m]  # (slices: indices from 0 let loops vectorise)
    for j in range(2 * m):
        i_f[j] = sigmoid(i_f[j])
    for j in range(m):
        g[j] = tanh(g[j])
    for j in range(m):
        o[j] = sigmoid(o[j])


@njit(**INLINE)
def _cell(act, c_prev, c_out, h_out, m):
    """A step's cell, from its gates' activations ``act`` [4 * m] (:func:`_activate`): the cell state
    to ``c_out`` [m] (may be ``c_prev``) and the output to ``h_out`` [m]."""
    i, f, g, o = act[:m], act[m:2 * m], act[2 * m:3 * m], act[3 * m:]
    for j in range(m):
        c = f[j] * c_prev[j] + i[j] * g[j]
        c_out[j] = c
        h_out[j] = o[j] * tanh(c)


@njit(**INLINE)
def _cell_backward(act, c_prev, c, dh, dc, dz, m):
    """A step backward: from the gradients reaching its output ``dh`` [m] and its cell state ``dc``
    [m] (updated in place to the one reaching the previous cell state), the gradients of the gates'
    pre-activations ``dz`` [4 * m]; ``act``: the gates' activations, ``c`` the cell state."""
    i, f, g, o = act[:m], act[m:2 * m], act[2 * m:3 * m], act[3 * m:]
    dz_i, dz_f, dz_g, dz_o = dz[:m], dz[m:2 * m], dz[2 * m:3 * m], dz[3 * m:]
    for j in range(m):
        t = tanh(c[j])
        d = dh[j]
        dcj = dc[j] + d * o[j] * (_ONE - t * t)
        dz_i[j] = dcj * g[j] * i[j] * (_ONE - i[j])
        dz_f[j] = dcj * c_prev[j] * f[j] * (_ONE - f[j])
        dz_g[j] = dcj * i[j] * (_ONE - g[j] * g[j])
        dz_o[j] = d * t * o[j] * (_ONE - o[j])
        dc[j] = dcj * f[j]


@njit(**INLINE)
def _first_step(w, a, z, f_in, n):
    """Step 0's gate pre-activations ``z`` [4U * n] (feature-major) from its inputs ``a`` (the first
    ``f_in`` rows of n values): ``W.T @ [x_0; h_{-1}; 1]`` with h_{-1} = 0, without the recurrent
    rows' product."""
    bias = w[w.shape[0] - 1]
    for q in range(w.shape[1]):
        zq = z[q * n:(q + 1) * n]
        for b in range(n):
            zq[b] = bias[q]
        for f in range(f_in):
            wfq = w[f, q]
            xf = a[f * n:(f + 1) * n]
            for b in range(n):
                zq[b] += wfq * xf[b]


@njit(**JIT)
def _evaluate_lstm(x, y, w, w2, b2, units, relu, a, z, c):
    """Inference-mode mean loss and accuracy of one replica on sequences ``x`` [N, T, F], ``y`` [N]:
    kernel ``w`` [F+U+1, 4U] (input, recurrent and bias rows), head ``w2`` [U], ``b2``; its ops
    after the LSTM reduce to a ReLU (``relu``) or nothing. Work arrays (feature-major) ``a``
    [(F+U+1) * N], ``z`` [4U * N], ``c`` [U * N]."""
    n, t_len, f_in = x.shape
    m = units * n
    k = f_in + units + 1
    h = a[f_in * n:f_in * n + m]
    for j in range(m):
        h[j] = 0.0
        c[j] = 0.0
    for b in range(n):
        a[(k - 1) * n + b] = 1.0
    a2, z2 = a.reshape((k, n)), z.reshape((4 * units, n))
    for t in range(t_len):
        for f in range(f_in):
            for b in range(n):
                a[f * n + b] = x[b, t, f]
        if t == 0:
            _first_step(w, a, z, f_in, n)
        else:
            np.dot(w.T, a2, z2)
        _activate(z, m)
        _cell(z, c, c, h, m)
    loss = 0.0
    correct = 0
    for b in range(n):
        acc = np.float32(0.0)
        if relu:
            for u in range(units):
                acc += max(h[u * n + b], np.float32(0.0)) * w2[u]
        else:
            for u in range(units):
                acc += h[u * n + b] * w2[u]
        logit = acc + b2
        loss += _bce(np.float64(logit), np.float64(y[b]))
        if (logit > 0) == (y[b] > 0.5):
            correct += 1
    return loss / n, correct / n


@njit(**JIT)
def train_lstm_block(first, last, updates, orders, x_train, y_train, x_test, y_test, units, theta, m, v,
                     in_codes, in_params, in_scales, lstm_keep, lstm_scale, hid_codes, hid_params, hid_scales,
                     lr, optimizer, beta_1, beta_2, epsilon, momentum, label_flip, grad_eta, grad_gamma,
                     bounds, batch_size, state, metrics):
    """Train epochs ``first`` to ``last - 1`` of every replica of input ops -> ``LSTM(units)`` (its
    own input dropout: keep probability ``lstm_keep`` [S], scale ``lstm_scale``; no recurrent dropout;
    the last step's output) -> ops -> ``Dense(1, sigmoid)``, with Keras ``fit`` semantics, and write
    each epoch's train loss and accuracy (the training-mode forward passes) and test loss and accuracy
    (inference mode) to ``metrics[epoch - first, :, r]``.

    Shapes: ``orders`` [E, S, N] int64; data [S or 1, N, T, F] and [S or 1, N]; ``theta`` [S, P]: each
    replica's parameters, flat: the LSTM's kernel [F, 4U], recurrent kernel [U, 4U] and bias [4U]
    (gates i, f, c, o; together the rows of ``W`` [F+U+1, 4U]), the head's kernel [U] and bias [1];
    ``m``, ``v``, the optimizer's moments, likewise; the other arguments as
    :func:`reglab.fusedkernels.train_block`'s. Per batch the random draws come in layer order: the
    input ops' (sample, step, feature), the LSTM's input mask (sample, feature), the ops' after it.

    Work arrays are feature-major, one block per step: the step's inputs ``[x_t; h_{t-1}; 1]``
    [F+U+1, B], its gates [4U, B] (``W.T @ inputs``), cell states [U, B], so that each gate's values
    for the whole batch are one contiguous run.
    """
    n_rep, n_par = theta.shape
    n, t_len, f_in = x_train.shape[1], x_train.shape[2], x_train.shape[3]
    k = f_in + units + 1
    g4 = 4 * units
    o_w2 = k * g4
    o_b2 = o_w2 + units
    bmax = min(batch_size, n)
    n_test = x_test.shape[1]
    xin = np.empty((bmax, t_len * f_in), np.float32)  # a batch's inputs after the input ops
    mask = np.empty((bmax, f_in), np.float32)  # the LSTM's input mask
    a = np.empty((t_len + 1) * k * bmax, np.float32)  # per step [x_t; h_{t-1}; 1]; step T: h_T
    z = np.empty(t_len * g4 * bmax, np.float32)  # per step the gates: pre-activations, then activations
    cs = np.empty(t_len * units * bmax, np.float32)  # per step the cell state
    dz = np.empty(g4 * bmax, np.float32)  # a step's gradients of the gates' pre-activations
    dh = np.empty(units * bmax, np.float32)
    dc = np.empty(units * bmax, np.float32)
    zero = np.zeros(units * bmax, np.float32)
    h = np.empty((bmax, units), np.float32)  # the last output, sample-major, then after the ops
    g = np.empty((bmax, units), np.float32)  # the gradient reaching it
    saved = np.empty((hid_codes.shape[0], bmax, units), np.float32)
    no_saved = np.empty((0, 1, 1), np.float32)
    grad_step = np.empty((k, g4), np.float32)
    at = np.empty(k * n_test, np.float32)
    zt = np.empty(g4 * n_test, np.float32)
    ct = np.empty(units * n_test, np.float32)
    targets = np.empty(n, np.float32)
    grad = np.empty(n_par, np.float32)
    grad_w = grad[:o_w2]
    relu = False
    for q in range(hid_codes.shape[0]):
        if hid_codes[q] == OP_RELU:
            relu = True
    for r in range(n_rep):
        xr, yr = x_train[r if x_train.shape[0] > 1 else 0], y_train[r if y_train.shape[0] > 1 else 0]
        th, mr, vr = theta[r], m[r], v[r]
        w = th[:o_w2].reshape((k, g4))
        w_rec = w[f_in:f_in + units]  # [U, 4U]
        w2, gw2 = th[o_w2:o_b2], grad[o_w2:o_b2]
        keep, scale = lstm_keep[r], lstm_scale[r]
        step = updates
        s = state[r]
        for epoch in range(first, last):
            p = label_flip[r]
            for i in range(n):
                targets[i] = yr[i]
                if p != 0:
                    s, x = uniform(s)
                    if x < p:
                        targets[i] = np.float32(1.0) - yr[i]
            loss_sum = 0.0
            correct = 0
            for lo in range(0, n, batch_size):
                nb = min(batch_size, n - lo)
                mb = units * nb  # a step's values of one gate, cell state or output
                ka, kz = k * nb, g4 * nb
                # the batch's inputs, their ops, the LSTM's input mask
                for b in range(nb):
                    seq = xr[orders[epoch, r, lo + b]]
                    for t in range(t_len):
                        for f in range(f_in):
                            xin[b, t * f_in + f] = seq[t, f]
                s = _apply_ops(xin, nb, in_codes, in_params, in_scales, r, s, no_saved, True)
                if keep != 1:
                    for b in range(nb):
                        for f in range(f_in):
                            s, x = uniform(s)
                            mask[b, f] = scale if x < keep else np.float32(0.0)
                # forward through time
                for j in range(mb):
                    a[f_in * nb + j] = 0.0
                for t in range(t_len):
                    at_t = a[t * ka:(t + 1) * ka]
                    for f in range(f_in):
                        for b in range(nb):
                            value = xin[b, t * f_in + f]
                            at_t[f * nb + b] = value * mask[b, f] if keep != 1 else value
                    for b in range(nb):
                        at_t[(k - 1) * nb + b] = 1.0
                    z_t = z[t * kz:(t + 1) * kz]
                    if t == 0:
                        _first_step(w, at_t, z_t, f_in, nb)
                    else:
                        np.dot(w.T, at_t.reshape((k, nb)), z_t.reshape((g4, nb)))
                    _activate(z_t, mb)
                    c_prev = cs[(t - 1) * mb:t * mb] if t > 0 else zero[:mb]
                    h_next = a[(t + 1) * ka + f_in * nb:(t + 1) * ka + f_in * nb + mb]
                    _cell(z_t, c_prev, cs[t * mb:(t + 1) * mb], h_next, mb)
                # the ops after the LSTM and the head
                h_last = a[t_len * ka + f_in * nb:t_len * ka + f_in * nb + mb]
                for b in range(nb):
                    for u in range(units):
                        h[b, u] = h_last[u * nb + b]
                s = _apply_ops(h, nb, hid_codes, hid_params, hid_scales, r, s, saved, True)
                for i in range(o_w2, n_par):
                    grad[i] = 0.0
                loss_sum, correct = _head(h, g, nb, th[o_b2], w2, gw2, grad[o_b2:], targets,
                                          orders[epoch, r, lo:lo + nb], hid_codes, hid_params, saved, r,
                                          loss_sum, correct)
                # backward through time; the kernel's gradient summed over the steps
                for b in range(nb):
                    for u in range(units):
                        dh[u * nb + b] = g[b, u]
                for j in range(mb):
                    dc[j] = 0.0
                for j in range(o_w2):
                    grad_w[j] = 0.0
                for t in range(t_len - 1, -1, -1):
                    c_prev = cs[(t - 1) * mb:t * mb] if t > 0 else zero[:mb]
                    _cell_backward(z[t * kz:(t + 1) * kz], c_prev, cs[t * mb:(t + 1) * mb], dh[:mb], dc[:mb],
                                   dz[:kz], mb)
                    dz2 = dz[:kz].reshape((g4, nb))
                    np.dot(a[t * ka:(t + 1) * ka].reshape((k, nb)), dz2.T, grad_step)
                    gs = grad_step.reshape(o_w2)
                    for j in range(o_w2):
                        grad_w[j] += gs[j]
                    if t > 0:
                        np.dot(w_rec, dz2, dh[:mb].reshape((units, nb)))
                s = gradient_noise(grad, bounds, grad_eta[r], grad_gamma, step, s)
                step += 1
                update(th, mr, vr, grad, optimizer, lr[r], step, beta_1, beta_2, epsilon, momentum)
            row_m = epoch - first
            metrics[row_m, 0, r] = loss_sum / n
            metrics[row_m, 1, r] = correct / n
            tl, ta = _evaluate_lstm(x_test[r if x_test.shape[0] > 1 else 0],
                                    y_test[r if y_test.shape[0] > 1 else 0], w, w2, th[o_b2], units, relu, at, zt, ct)
            metrics[row_m, 2, r] = tl
            metrics[row_m, 3, r] = ta
        state[r] = s
