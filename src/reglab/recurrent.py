"""A replica-batched Keras ``LSTM``.

Input sequences are ``[S, B, T, F]`` (replica, sample, time, feature). The input projection of
all time steps is one batched matmul; each time step is then one ``baddbmm`` over all replicas.
"""

from __future__ import annotations

import torch
from torch import nn

from reglab.layers import RandomDraws, keras_init_


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
        # Input projection of every step at once, time-major so each step's slice is one block.
        xw = torch.baddbmm(self.bias, x.transpose(1, 2).reshape(s, t * b, f), self.kernel).view(s, t, b, 4 * u)
        h = x.new_zeros(s, b, u)
        c = x.new_zeros(s, b, u)
        outputs = []
        for step in range(t):
            h_in = h if rec_mask is None else h * rec_mask
            z = torch.baddbmm(xw[:, step], h_in, self.recurrent_kernel)
            i, fg, g, o = z.chunk(4, dim=2)
            c = torch.sigmoid(fg) * c + torch.sigmoid(i) * torch.tanh(g)
            h = torch.sigmoid(o) * torch.tanh(c)
            if self.return_sequences:
                outputs.append(h)
        return torch.stack(outputs, dim=2) if self.return_sequences else h
