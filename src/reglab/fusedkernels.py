"""Compiled loops of the fused engine (:mod:`reglab.fused`): a whole block of epochs of every replica
of a one-hidden-layer binary MLP in one call, and the per-replica random numbers they draw.

Compiled by numba (``cache=True``: once per machine, then loaded from ``__pycache__``). Each replica
is trained by the same loops on its own slices of the arrays, one replica after another, so a
replica's numbers do not depend on which other replicas share its model. Floating-point sums may be
reordered for vector instructions (``fastmath`` reassociation and contraction only: NaN and inf keep
their IEEE meaning, a diverged replica still shows as NaN).

Random numbers: each replica has one 64-bit SplitMix64 state (Steele, Lea & Flood 2014) that every
draw advances. A uniform is the top 24 bits of a draw scaled to [0, 1) (exact in float32); a normal
is drawn by the ziggurat method (Marsaglia & Tsang 2000, 128 layers), with the layer index and the
32-bit value taken from separate bits of one draw.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit

FASTMATH = {"reassoc", "contract", "nsz"}
JIT = dict(cache=True, fastmath=FASTMATH, nogil=True, error_model="numpy")
#: the helpers of the loops: inlined into them (a call per random number or sample costs more than its work)
INLINE = dict(JIT, inline="always")

# input ops (before the hidden Dense) and hidden ops (between it and the head): codes
OP_NOISE, OP_DROPOUT, OP_RELU = 0, 1, 2

_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_MIX1 = np.uint64(0xBF58476D1CE4E5B9)
_MIX2 = np.uint64(0x94D049BB133111EB)
_U24 = np.float32(1.0 / (1 << 24))


def _ziggurat_tables() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Marsaglia & Tsang's RNOR tables: kn (int64 thresholds), wn and fn (float64)."""
    m1 = 2147483648.0
    dn = tn = 3.442619855899
    vn = 9.91256303526217e-3
    kn, wn, fn = np.zeros(128, np.int64), np.zeros(128), np.zeros(128)
    q = vn / math.exp(-0.5 * dn * dn)
    kn[0], kn[1] = int((dn / q) * m1), 0
    wn[0], wn[127] = q / m1, dn / m1
    fn[0], fn[127] = 1.0, math.exp(-0.5 * dn * dn)
    for i in range(126, 0, -1):
        dn = math.sqrt(-2.0 * math.log(vn / dn + math.exp(-0.5 * dn * dn)))
        kn[i + 1] = int((dn / tn) * m1)
        tn = dn
        fn[i] = math.exp(-0.5 * dn * dn)
        wn[i] = dn / m1
    return kn, wn, fn


KN, WN, FN = _ziggurat_tables()
ZIGGURAT_R = 3.442620


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
def _uniform64(s):
    """The new state and a float64 uniform on (0, 1)."""
    s, z = next_u64(s)
    return s, (np.float64(z >> np.uint64(11)) + 0.5) * (1.0 / 9007199254740992.0)


@njit(**INLINE)
def _layer(z):
    """A draw's ziggurat layer (its low 7 bits) and signed 32-bit value (its high 32 bits)."""
    return np.int64(z & np.uint64(127)), np.int64(np.int32(np.uint32(z >> np.uint64(32))))


@njit(**INLINE)
def normal(s, kn, wn, fn):
    """The new state and a standard normal (float64), by the ziggurat method: the fast path (about
    99% of draws) inline, the rest in :func:`_normal_rest` (a separate function: inlined, it slows
    the fast path fourfold)."""
    s, z = next_u64(s)
    iz, hz = _layer(z)
    if abs(hz) < kn[iz]:
        return s, hz * wn[iz]
    return _normal_rest(s, iz, hz, kn, wn, fn)


@njit(**JIT)
def _normal_rest(s, iz, hz, kn, wn, fn):
    """The ziggurat's rejection steps, from a draw (layer ``iz``, value ``hz``) outside the fast path."""
    while True:
        x = hz * wn[iz]
        if iz == 0:  # the tail beyond R
            while True:
                s, u1 = _uniform64(s)
                s, u2 = _uniform64(s)
                x = -math.log(u1) / ZIGGURAT_R
                if -2.0 * math.log(u2) >= x * x:
                    break
            return s, (ZIGGURAT_R + x if hz > 0 else -ZIGGURAT_R - x)
        s, u = _uniform64(s)
        if fn[iz] + u * (fn[iz - 1] - fn[iz]) < math.exp(-0.5 * x * x):
            return s, x
        s, z = next_u64(s)
        iz, hz = _layer(z)
        if abs(hz) < kn[iz]:
            return s, hz * wn[iz]


@njit(**JIT)
def fill_uniform(state, r, out):
    """Fill the 1-D float32 ``out`` with replica ``r``'s next uniforms, in order (advancing ``state[r]``)."""
    s = state[r]
    for i in range(out.shape[0]):
        s, out[i] = uniform(s)
    state[r] = s


@njit(**JIT)
def fill_normal(state, r, out):
    """Fill the 1-D float32 ``out`` with replica ``r``'s next standard normals, in order (advancing ``state[r]``)."""
    s = state[r]
    for i in range(out.shape[0]):
        s, x = normal(s, KN, WN, FN)
        out[i] = np.float32(x)
    state[r] = s


@njit(**INLINE)
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
                        mask[u] = np.float32(1.0) if row[u] > 0 else np.float32(0.0)
                for u in range(row.shape[0]):
                    row[u] = max(row[u], np.float32(0.0))
        elif not training:
            continue
        elif code == OP_NOISE:
            std = params[k, r]
            if std != 0:
                for b in range(nb):
                    row = a[b]
                    for u in range(row.shape[0]):
                        s, x = normal(s, KN, WN, FN)
                        row[u] += np.float32(x) * std
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


@njit(**INLINE)
def _bce(logit, y):
    """Binary cross-entropy from a logit (torch's stable form), in float64."""
    return max(logit, 0.0) - logit * y + math.log1p(math.exp(-abs(logit)))


@njit(**INLINE)
def _dense(x, theta, f_in, units, out):
    """``out = x @ w1 + b1`` for one sample ``x`` [F]; ``theta`` holds w1 (row-major [F, U]) then b1."""
    b1 = theta[f_in * units:(f_in + 1) * units]
    for u in range(units):
        out[u] = b1[u]
    for f in range(f_in):
        xf = x[f]
        w = theta[f * units:(f + 1) * units]
        for u in range(units):
            out[u] += xf * w[u]


@njit(**INLINE)
def _evaluate(x, y, theta, f_in, units, relu, z):
    """Inference-mode mean loss and accuracy of one replica (parameters ``theta``) on ``x`` [N, F],
    ``y`` [N]: its hidden ops reduce to a ReLU (``relu``) or nothing, as noise and dropout are off."""
    n = x.shape[0]
    w2 = theta[(f_in + 1) * units:(f_in + 2) * units]
    b2 = theta[(f_in + 2) * units]
    loss = 0.0
    correct = 0
    for i in range(n):
        _dense(x[i], theta, f_in, units, z)
        acc = np.float32(0.0)
        if relu:
            for u in range(units):
                acc += max(z[u], np.float32(0.0)) * w2[u]
        else:
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
                max_norm, label_flip, grad_eta, grad_gamma, batch_size, state, metrics):
    """Train epochs ``first`` to ``last - 1`` of every replica (Keras ``fit`` semantics, as
    :class:`reglab.module.ReplicaClassifier` does with autograd) and write each epoch's train loss,
    train accuracy (the training-mode forward passes), test loss and test accuracy (inference mode)
    to ``metrics[epoch - first, :, r]``.

    Shapes: ``orders`` [E, S, N] int64; data [S or 1, N, F] and [S or 1, N] (with S rows, row r is
    replica r's); ``theta`` [S, P]: each replica's parameters, flat: the hidden kernel (row-major
    [F, U]), its bias [U], the head's kernel [U] and bias [1]; ``m``, ``v`` likewise, the optimizer's
    moments (Adam's m and v; SGD's velocity in m); op codes [ops] and per-replica op parameters
    [ops, S]; ``lr``, ``max_norm`` (inf: none), ``label_flip``, ``grad_eta`` [S]; ``optimizer`` 0 Adam,
    1 SGD; ``updates``: the optimizer steps taken before ``first``, the same for every replica.
    """
    n_rep, n_par = theta.shape
    f_in = x_train.shape[2]
    units = (n_par - 1) // (f_in + 2)
    o_b1, o_w2, o_b2 = f_in * units, (f_in + 1) * units, (f_in + 2) * units
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
    c1, c2, eps = np.float32(1.0 - beta_1), np.float32(1.0 - beta_2), np.float32(epsilon)
    for r in range(n_rep):
        xr, yr = x_train[r if x_train.shape[0] > 1 else 0], y_train[r if y_train.shape[0] > 1 else 0]
        th, mr, vr = theta[r], m[r], v[r]
        w2, gw2 = th[o_w2:o_b2], grad[o_w2:o_b2]
        gb1 = grad[o_b1:o_w2]
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
                for b in range(nb):
                    hb = h[b]
                    acc = np.float32(0.0)
                    for u in range(units):
                        acc += hb[u] * w2[u]
                    logit = acc + th[o_b2]
                    t = targets[orders[epoch, r, lo + b]]
                    loss_sum += _bce(np.float64(logit), np.float64(t))  # the batch mean times its size
                    if (logit > 0) == (t > 0.5):
                        correct += 1
                    # d(batch mean loss)/d(logit), then the head's gradients and the hidden one
                    d = (np.float32(1.0) / (np.float32(1.0) + np.float32(math.exp(-logit))) - t) / np.float32(nb)
                    grad[o_b2] += d
                    gb = g[b]
                    for u in range(units):
                        gw2[u] += hb[u] * d
                        gb[u] = d * w2[u]
                # backward through the hidden ops (noise passes the gradient as it is), then the Dense
                for k in range(hid_codes.shape[0] - 1, -1, -1):
                    code = hid_codes[k]
                    if code == OP_NOISE or (code == OP_DROPOUT and hid_params[k, r] == 1):
                        continue
                    for b in range(nb):
                        gb, mask = g[b], saved[k, b]
                        for u in range(units):
                            gb[u] *= mask[u]
                for b in range(nb):
                    gb = g[b]
                    for u in range(units):
                        gb1[u] += gb[u]
                    for f in range(f_in):
                        xf = a0[b, f]
                        gw = grad[f * units:(f + 1) * units]
                        for u in range(units):
                            gw[u] += xf * gb[u]
                # gradient noise (Neelakantan et al. 2015): variance eta / (1 + t)^gamma at update t
                eta = grad_eta[r]
                if eta != 0:
                    std = np.float32(math.sqrt(eta / (1.0 + step) ** grad_gamma))
                    for i in range(n_par):
                        s, x = normal(s, KN, WN, FN)
                        grad[i] += np.float32(x) * std
                step += 1
                if optimizer == 0:  # Keras Adam
                    alpha = np.float32(lr[r] * (math.sqrt(1.0 - beta_2 ** step) / (1.0 - beta_1 ** step)))
                    for i in range(n_par):
                        gi = grad[i]
                        mi = mr[i] + (gi - mr[i]) * c1
                        vi = vr[i] + (gi * gi - vr[i]) * c2
                        mr[i] = mi
                        vr[i] = vi
                        th[i] -= alpha * (mi / (np.sqrt(vi) + eps))
                else:  # Keras SGD with momentum: v = mu v - lr g; w += v
                    rate, mu = np.float32(lr[r]), np.float32(momentum)
                    for i in range(n_par):
                        vel = mu * mr[i] - rate * grad[i]
                        mr[i] = vel
                        th[i] += vel
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
