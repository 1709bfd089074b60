"""A replica-batched Keras ``LSTM``.

Input sequences are ``[S, B, T, F]`` (replica, sample, time, feature). The recurrence runs in
:class:`_Recurrence`, an autograd Function with a hand-written backward through time: each step is
one batched matmul over all replicas (inputs, state and bias at once; with recurrent dropout over
all replicas and gates, each gate reading its own masked inputs and state) and a few elementwise
ops, with no autograd graph per step.

Speed (CPU, one thread, S=10, B=32, forward+backward; a shared machine, +-20%): about 0.85-0.9x
the time of 10 separate ``nn.LSTM`` calls, whose CPU kernels are fused (oneDNN); the same LSTM
built from per-step autograd ops took ~3x their time. It does not beat torch's fused LSTM on CPU;
it exists for Keras' semantics (recurrent dropout, initialisers) and per-replica random streams.
With recurrent dropout (Keras' per-gate masks: four smaller matmuls per replica and step, the
masked states and inputs four times over) a training pass takes ~1.3x its time without.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.autograd.function import once_differentiable

from reglab.layers import RandomDraws, Rate, keras_init_

#: Per gate (i, f, c, o), the factor on the weights fed to :class:`_Recurrence`: the c gate's
#: doubled, so that one sigmoid serves all four gates (``tanh(z) = 2*sigmoid(2z) - 1``).
GATE_SCALE = (1.0, 1.0, 2.0, 1.0)


def _cell_step(t: int, a: torch.Tensor, gs, cs, tcs, hs, one, two) -> torch.Tensor:
    """Step t's cell from its gates' sigmoids ``a`` ``[S, 4U, B]``: writes ``gs[t]`` (the c gate),
    ``cs[t]`` (cell state), ``tcs[t]`` (its tanh) and returns ``hs[t]`` (output)."""
    i, f, sg, o = a.split(gs.shape[2], dim=1)
    g = torch.mul(sg, two, out=gs[t]).sub_(one)
    c = torch.mul(i, g, out=cs[t])
    if t > 0:
        c.addcmul_(f, cs[t - 1])
    tc = torch.mul(c, two, out=tcs[t]).sigmoid_().mul_(two).sub_(one)
    return torch.mul(o, tc, out=hs[t])


def _cell_step_backward(t: int, dh, dc, d, dz, sig, gs, cs, tcs, one, two) -> torch.Tensor:
    """Step t's gradient w.r.t. its gates' (scaled) pre-activations, written to ``d`` ``[S, 4U, B]``
    (``dz``: its four gate blocks), from the gradients reaching its output ``dh`` and cell state
    ``dc`` (None at the last step); returns the gradient passed on to cell state t-1."""
    a = sig[t]
    i, f, _, o = a.split(gs.shape[2], dim=1)
    dzi, dzf, dzg, dzo = dz
    g, tc = gs[t], tcs[t]
    # dc += dh * o * (1 - tanh(c)^2)
    dtc = torch.addcmul(one, tc, tc, value=-1).mul_(o)
    dc = dtc.mul_(dh) if dc is None else dc.addcmul_(dh, dtc)
    # upstream of each gate's activation: dc*g, dc*c_prev, dc*i (x2: g = 2*sig - 1), dh*tanh(c)
    torch.mul(dc, g, out=dzi)
    if t > 0:
        torch.mul(dc, cs[t - 1], out=dzf)
    else:
        dzf.zero_()
    torch.mul(dc, i, out=dzg).mul_(two)
    torch.mul(dh, tc, out=dzo)
    d.mul_(torch.addcmul(a, a, a, value=-1))  # times sigmoid' = sig * (1 - sig)
    return dc.mul_(f) if t > 0 else dc


class _Recurrence(torch.autograd.Function):
    """The LSTM over a whole sequence, all replicas at once, time- and feature-major.

    Without a recurrent mask (one group: every gate reads the same inputs): ``x`` ``[T, S, F, B]``;
    ``w`` ``[S, F+U+1, 4U]``: the kernel, recurrent kernel and bias stacked (rows), gate blocks
    i, f, c, o (columns). Step t's pre-activations are ``w.T @ [x_t; h_{t-1}; 1]``.

    With ``mask`` ``[S, 4, U, B]`` (recurrent dropout, scaled; four groups: each gate reads its
    own inputs): ``x`` ``[T, S*4, F, B]``, replica-major, gate k's (masked) inputs at row
    ``s*4 + k``; ``w`` ``[S*4, F+U+1, U]``, gate k's columns of the stacked weights. Gate k's
    pre-activations are ``w[k].T @ [x_t[k]; h_{t-1} * mask[k]; 1]``.

    Either way the c gate's weights are scaled by 2 (:data:`GATE_SCALE`); returns every step's
    hidden state ``[T, S, U, B]``; zero initial state.

    Why (CPU, measured at S=10, B=32, U=32, where per-op overhead rivals the arithmetic): one
    matmul per step with the input and bias rows folded in, and no ``[T, S, 4U, B]`` input
    projection to build and differentiate; time-major, a step's tensors are contiguous; feature-major,
    each gate is one contiguous ``[U, B]`` block per replica; torch's CPU ``tanh`` is ~5x slower than
    its ``sigmoid``, hence ``2*sigmoid(2z) - 1``; Python-number operands cost a dtype conversion per
    op, hence 0-dim tensor constants; and a hand-written backward (about 15 ops a step).
    """

    @staticmethod
    def forward(ctx, x: torch.Tensor, w: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        t_len, sg, f_in, b = x.shape
        groups = 1 if mask is None else mask.shape[1]
        s, u = sg // groups, w.shape[2] * groups // 4
        one, two = x.new_tensor(1.0), x.new_tensor(2.0)
        w_t = w.transpose(1, 2)  # [S*G, 4U/G, F+U+1]
        xh = x.new_empty(t_len, sg, f_in + u + 1, b)  # each step's [x_t; h_{t-1}; 1], per group
        xh[:, :, :f_in] = x
        xh[0, :, f_in : f_in + u] = 0.0
        xh[:, :, f_in + u] = 1.0
        gs = x.new_empty(t_len, s, u, b)  # the c gate: tanh(z) = 2*sig - 1
        cs = torch.empty_like(gs)  # cell states
        tcs = torch.empty_like(gs)  # tanh(c)
        hs = torch.empty_like(gs)  # outputs
        sig = x.new_empty(t_len, s, 4 * u, b)  # sigmoid of every gate's (scaled) pre-activation
        for t in range(t_len):
            torch.bmm(w_t, xh[t], out=sig[t].view(sg, -1, b))
            h = _cell_step(t, sig[t].sigmoid_(), gs, cs, tcs, hs, one, two)
            if t + 1 < t_len:
                h_next = xh[t + 1, :, f_in : f_in + u]
                if mask is None:
                    h_next.copy_(h)
                else:
                    torch.mul(h.unsqueeze(1), mask, out=h_next.view(s, groups, u, b))
        ctx.save_for_backward(xh, w, sig, gs, cs, tcs, mask)
        ctx.f_in = f_in
        return hs

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_hs: torch.Tensor):
        xh, w, sig, gs, cs, tcs, mask = ctx.saved_tensors
        f_in = ctx.f_in
        t_len, s, u4, b = sig.shape
        u = u4 // 4
        sg = xh.shape[1]
        one, two = sig.new_tensor(1.0), sig.new_tensor(2.0)
        need_x, need_w = ctx.needs_input_grad[:2]
        d = sig.new_empty(s, u4, b)  # one step's gradient w.r.t. the pre-activations
        dz = d.split(u, dim=1)
        d_groups = d.view(sg, -1, b)
        dxh = sig.new_empty(t_len, sg, f_in + u, b) if need_x else None
        w_h = w[:, f_in : f_in + u]  # the recurrent rows
        grad_w = torch.zeros_like(w) if need_w else None
        dh = dc = None
        for t in range(t_len - 1, -1, -1):
            dh = grad_hs[t] if dh is None else dh.add_(grad_hs[t])
            dc = _cell_step_backward(t, dh, dc, d, dz, sig, gs, cs, tcs, one, two)
            if need_w:
                grad_w.baddbmm_(xh[t], d_groups.transpose(1, 2))
            if need_x:
                dh = torch.bmm(w[:, : f_in + u], d_groups, out=dxh[t])[:, f_in:]
            elif t > 0:
                dh = torch.bmm(w_h, d_groups)
            if mask is not None and t > 0:  # each gate's share of the gradient, through its mask
                dh = dh.view(s, -1, u, b).mul(mask).sum(dim=1)
        return (dxh[:, :, :f_in] if need_x else None), grad_w, None


class LSTM(RandomDraws):
    """Keras ``LSTM(units, return_sequences, dropout, recurrent_dropout)`` with Keras' defaults.

    Gates in Keras' (and torch's) order i, f, c, o; activation tanh, recurrent activation sigmoid;
    zero initial state. Weights per replica: ``kernel`` ``[S, in_features, 4*units]``
    (``glorot_uniform``, fans ``in_features`` and ``4*units``), ``recurrent_kernel``
    ``[S, units, 4*units]`` (Keras ``Orthogonal`` over the whole matrix: its rows are orthonormal),
    ``bias`` ``[S, 1, 4*units]`` zeros with the forget-gate block at 1 (``unit_forget_bias``).

    ``dropout`` / ``recurrent_dropout`` (training only, inverted scaling) follow Keras 3's
    ``LSTMCell``; every mask is drawn once per forward pass (per batch of sequences), per replica
    from that replica's generator, and reused at every time step (Gal & Ghahramani's variational RNN):

    - ``recurrent_dropout == 0`` (Keras' ``implementation=2``): with ``dropout``, ONE input mask
      ``[S, B, F]`` shared by all four gates.
    - ``recurrent_dropout > 0`` (Keras switches to ``implementation=1``, ``dropout_mask_count=4``):
      FOUR independent input masks ``[S, 4, B, F]`` (one per gate i, f, c, o; only when
      ``dropout > 0``), drawn first, then FOUR independent recurrent masks ``[S, 4, B, units]``,
      one per gate, on the state ``h_{t-1}`` that gate sees.

    A fresh mask per time step is instead :class:`reglab.layers.Dropout` applied to the
    ``[S, B, T, F]`` input before the LSTM.

    Both rates may differ between replicas (one number, or one per replica), as long as
    ``recurrent_dropout`` is 0 for all replicas or for none (the two cases are different cells).

    Output: the last hidden state ``[S, B, units]``, or every step's ``[S, B, T, units]`` with
    ``return_sequences=True``.
    """

    def __init__(
        self,
        replicas: int,
        in_features: int,
        units: int,
        return_sequences: bool = False,
        dropout=0.0,
        recurrent_dropout=0.0,
    ) -> None:
        super().__init__()
        self.units = units
        self.return_sequences = return_sequences
        self.dropout = Rate(dropout)
        self.recurrent_dropout = Rate(recurrent_dropout)
        if self.recurrent_dropout.any() and not all(self.recurrent_dropout.active):
            raise ValueError("recurrent_dropout must be 0 for all replicas or for none "
                             "(Keras uses a different LSTM cell for each case)")
        self.kernel = nn.Parameter(torch.empty(replicas, in_features, 4 * units))
        self.recurrent_kernel = nn.Parameter(torch.empty(replicas, units, 4 * units))
        self.bias = nn.Parameter(torch.zeros(replicas, 1, 4 * units))
        with torch.no_grad():
            self.bias[:, :, units : 2 * units] = 1.0

    def reset_parameters(self, generators: list[torch.Generator]) -> None:
        """Replica r: kernel (glorot_uniform) then recurrent kernel (orthogonal) from generator r;
        bias zeros with the forget gate at 1."""
        _, fan_in, fan_out = self.kernel.shape
        u = self.units
        with torch.no_grad():
            for r, gen in enumerate(generators):
                keras_init_(self.kernel[r], "glorot_uniform", fan_in, fan_out, gen)
                # torch's orthogonal_ is Keras' Orthogonal: QR of a normal matrix of shape
                # (max, min), columns sign-corrected by diag(R), transposed when rows < cols.
                nn.init.orthogonal_(self.recurrent_kernel[r], generator=gen)
            self.bias.zero_()
            self.bias[:, :, u : 2 * u] = 1.0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gated = self.training and self.recurrent_dropout.any()
        hs = self._per_gate_masks(x) if gated else self._shared_mask(x)  # [T, S, U, B]
        return hs.permute(1, 3, 0, 2) if self.return_sequences else hs[-1].transpose(1, 2)

    def _stacked_weights(self, like: torch.Tensor) -> torch.Tensor:
        """Kernel, recurrent kernel and bias stacked ``[S, F+U+1, 4U]``, the c gate's columns
        scaled by 2 (:data:`GATE_SCALE`)."""
        scale = like.new_tensor(GATE_SCALE).repeat_interleave(self.units)
        return torch.cat([self.kernel, self.recurrent_kernel, self.bias], dim=1) * scale

    def _shared_mask(self, x: torch.Tensor) -> torch.Tensor:
        """Keras' ``implementation=2``: one input dropout mask for all gates, no recurrent dropout."""
        s, b, _, f = x.shape
        if self.training and self.dropout.any():
            x = x * self.dropout.mask(x.new_empty(s, b, 1, f), self.generators)
        return _Recurrence.apply(x.permute(2, 0, 3, 1), self._stacked_weights(x), None)

    def _per_gate_masks(self, x: torch.Tensor) -> torch.Tensor:
        """Keras' ``implementation=1`` in training: per gate its own input and recurrent dropout masks."""
        s, b, t, f = x.shape
        u = self.units
        x_steps = x.permute(2, 0, 3, 1).unsqueeze(2)  # [T, S, 1, F, B]
        if self.dropout.any():
            in_mask = self.dropout.mask(x.new_empty(s, 4, b, f), self.generators)
            x_steps = x_steps * in_mask.transpose(2, 3)  # [T, S, 4, F, B]: gate k's inputs
        rec_mask = self.recurrent_dropout.mask(x.new_empty(s, 4, b, u), self.generators)
        w = self._stacked_weights(x).view(s, f + u + 1, 4, u).transpose(1, 2).reshape(s * 4, f + u + 1, u)
        x_gates = x_steps.expand(t, s, 4, f, b).reshape(t, s * 4, f, b)
        return _Recurrence.apply(x_gates, w, rec_mask.transpose(2, 3).contiguous())
