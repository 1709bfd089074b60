"""A replica-batched Keras ``LSTM``.

Input sequences are ``[S, B, T, F]`` (replica, sample, time, feature). The input projection of
all time steps is one batched matmul (autograd handles it); the recurrence runs in
:class:`_Recurrence`, an autograd Function with a hand-written backward through time: per step,
one ``baddbmm`` over all replicas and a few fused elementwise ops, without building an autograd
graph per step, and the recurrent kernel's gradient as one matmul over all steps at the end.
(Built from per-step autograd ops, the batched LSTM was ~3x slower than S separate nn.LSTM.)
"""

from __future__ import annotations

import torch
from torch import nn
from torch.autograd.function import once_differentiable

from reglab.layers import RandomDraws, keras_init_


class _Recurrence(torch.autograd.Function):
    """LSTM recurrence over precomputed input projections.

    ``xw`` ``[S, T, B, 4U]`` (``x_t @ kernel + bias``, gates i, f, c, o), ``rk`` ``[S, U, 4U]``,
    ``mask`` ``[S, B, U]`` (recurrent dropout, scaled) or None. Returns every step's hidden state
    ``[S, T, B, U]``; zero initial state.
    """

    @staticmethod
    def forward(ctx, xw: torch.Tensor, rk: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        s, t_len, b, u4 = xw.shape
        u = u4 // 4
        act = torch.empty_like(xw)  # activated gates i, f, g, o
        cs = xw.new_empty(s, t_len, b, u)  # cell states
        tcs = torch.empty_like(cs)  # tanh(c)
        hs = torch.empty_like(cs)  # outputs
        h_in = xw.new_zeros(s, t_len, b, u)  # the (masked) state each step multiplies with rk
        for t in range(t_len):
            z = xw[:, t] if t == 0 else torch.baddbmm(xw[:, t], h_in[:, t], rk)
            a = act[:, t]
            torch.sigmoid(z, out=a)
            torch.tanh(z[..., 2 * u : 3 * u], out=a[..., 2 * u : 3 * u])
            i, f, g, o = a.split(u, dim=-1)
            c = torch.mul(i, g, out=cs[:, t])
            if t > 0:
                c.addcmul_(f, cs[:, t - 1])
            torch.tanh(c, out=tcs[:, t])
            h = torch.mul(o, tcs[:, t], out=hs[:, t])
            if t + 1 < t_len:
                if mask is None:
                    h_in[:, t + 1] = h
                else:
                    torch.mul(h, mask, out=h_in[:, t + 1])
        ctx.save_for_backward(act, cs, tcs, h_in, rk, mask)
        return hs

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_hs: torch.Tensor):
        act, cs, tcs, h_in, rk, mask = ctx.saved_tensors
        s, t_len, b, u4 = act.shape
        u = u4 // 4
        i, f, g, o = act.split(u, dim=-1)
        # Everything that does not depend on the backward recurrence, for all steps at once.
        c_prev = torch.cat([cs.new_zeros(s, 1, b, u), cs[:, :-1]], dim=1)
        dsig = act * (1 - act)  # sigmoid' (the g block is replaced below)
        # d z_{i,f,g} = dc * (g * sig'(i), c_prev * sig'(f), i * tanh'(g)); d z_o = dh * tanh(c) * sig'(o)
        coef_c = torch.stack([g * dsig[..., :u], c_prev * dsig[..., u : 2 * u], i * (1 - g * g)], dim=3)
        coef_o = tcs * dsig[..., 3 * u :]
        o_dtanh = o * (1 - tcs * tcs)  # dc += dh * o * tanh'(c)
        dz = torch.empty_like(act)
        rk_t = rk.transpose(1, 2)
        dh = dc = None
        for t in range(t_len - 1, -1, -1):
            dh = grad_hs[:, t] if dh is None else dh.add_(grad_hs[:, t])
            torch.mul(dh, coef_o[:, t], out=dz[:, t, :, 3 * u :])
            dc = dh * o_dtanh[:, t] if dc is None else dc.addcmul_(dh, o_dtanh[:, t])
            torch.mul(dc.unsqueeze(2), coef_c[:, t], out=dz[:, t, :, : 3 * u].unflatten(-1, (3, u)))
            if t == 0:
                break
            dc.mul_(f[:, t])
            dh = torch.bmm(dz[:, t], rk_t)
            if mask is not None:
                dh.mul_(mask)
        grad_rk = None
        if ctx.needs_input_grad[1]:
            grad_rk = torch.bmm(h_in.view(s, t_len * b, u).transpose(1, 2), dz.view(s, t_len * b, u4))
        return dz, grad_rk, None


class LSTM(RandomDraws):
    """Keras ``LSTM(units, return_sequences, dropout, recurrent_dropout)`` with Keras' defaults.

    Gates in Keras' (and torch's) order i, f, c, o; activation tanh, recurrent activation sigmoid;
    zero initial state. Weights per replica: ``kernel`` ``[S, in_features, 4*units]``
    (``glorot_uniform``, fans ``in_features`` and ``4*units``), ``recurrent_kernel``
    ``[S, units, 4*units]`` (Keras ``Orthogonal`` over the whole matrix: its rows are orthonormal),
    ``bias`` ``[S, 1, 4*units]`` zeros with the forget-gate block at 1 (``unit_forget_bias``).

    ``dropout`` / ``recurrent_dropout`` (training only, inverted scaling) follow Keras 3: one mask
    per replica and sample for the inputs ``[S, B, F]`` and one for the recurrent state
    ``[S, B, units]``, drawn once per sequence (per forward pass) and reused at every time step and
    by all four gates (Gal & Ghahramani's variational RNN). A fresh mask per time step is instead
    :class:`reglab.layers.Dropout` applied to the ``[S, B, T, F]`` input before the LSTM.

    Output: the last hidden state ``[S, B, units]``, or every step's ``[S, B, T, units]`` with
    ``return_sequences=True``.
    """

    def __init__(
        self,
        replicas: int,
        in_features: int,
        units: int,
        return_sequences: bool = False,
        dropout: float = 0.0,
        recurrent_dropout: float = 0.0,
    ) -> None:
        super().__init__()
        self.units = units
        self.return_sequences = return_sequences
        self.dropout = dropout
        self.recurrent_dropout = recurrent_dropout
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

    def _mask(self, like: torch.Tensor, rate: float) -> torch.Tensor:
        keep = 1.0 - rate
        return self._draw(like, "uniform_").lt_(keep).mul_(1.0 / keep)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s, b, t, f = x.shape
        u = self.units
        train = self.training
        if train and self.dropout > 0.0:
            x = x * self._mask(x.new_empty(s, b, 1, f), self.dropout)
        rec_mask = None
        if train and self.recurrent_dropout > 0.0:
            rec_mask = self._mask(x.new_empty(s, b, u), self.recurrent_dropout)
        # Input projection of every step at once, time-major within each replica.
        xw = torch.baddbmm(self.bias, x.transpose(1, 2).reshape(s, t * b, f), self.kernel).view(s, t, b, 4 * u)
        hs = _Recurrence.apply(xw, self.recurrent_kernel, rec_mask)  # [S, T, B, U]
        return hs.transpose(1, 2) if self.return_sequences else hs[:, -1]
