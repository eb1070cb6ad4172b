"""Recurrent cells written from their equations (lab m07), with PyTorch's weight layout so that the same
weights give the same numbers as ``torch.nn.GRU`` / ``torch.nn.LSTM``, and a character-level GRU LM.

GRU (gates stacked r, z, n in ``w_ih`` (3H, I) and ``w_hh`` (3H, H)):
    r = sigmoid(W_ir x + b_ir + W_hr h + b_hr)        z = sigmoid(W_iz x + b_iz + W_hz h + b_hz)
    n = tanh(W_in x + b_in + r * (W_hn h + b_hn))      h' = (1 - z) * n + z * h
LSTM (gates stacked i, f, g, o in (4H, .)):
    i, f, o = sigmoid(.), g = tanh(.)                  c' = f * c + i * g        h' = o * tanh(c')
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn


def gru_cell(x: Tensor, h: Tensor, w_ih: Tensor, w_hh: Tensor, b_ih: Tensor, b_hh: Tensor) -> Tensor:
    """One GRU step: x (B, I), h (B, H) -> h' (B, H)."""
    gi = x @ w_ih.T + b_ih
    gh = h @ w_hh.T + b_hh
    i_r, i_z, i_n = gi.chunk(3, dim=-1)
    h_r, h_z, h_n = gh.chunk(3, dim=-1)
    r = torch.sigmoid(i_r + h_r)
    z = torch.sigmoid(i_z + h_z)
    n = torch.tanh(i_n + r * h_n)
    return (1 - z) * n + z * h


def lstm_cell(x: Tensor, h: Tensor, c: Tensor, w_ih: Tensor, w_hh: Tensor, b_ih: Tensor,
              b_hh: Tensor) -> tuple[Tensor, Tensor]:
    """One LSTM step: x (B, I), h and c (B, H) -> (h', c')."""
    i, f, g, o = (x @ w_ih.T + b_ih + h @ w_hh.T + b_hh).chunk(4, dim=-1)
    c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
    return torch.sigmoid(o) * torch.tanh(c), c


def gru(x: Tensor, h0: Tensor, w_ih: Tensor, w_hh: Tensor, b_ih: Tensor, b_hh: Tensor) -> tuple[Tensor, Tensor]:
    """A one-layer GRU over x (T, B, I) from h0 (B, H): returns (outputs (T, B, H), h_T)."""
    h, outputs = h0, []
    for t in range(x.shape[0]):
        h = gru_cell(x[t], h, w_ih, w_hh, b_ih, b_hh)
        outputs.append(h)
    return torch.stack(outputs), h


def lstm(x: Tensor, h0: Tensor, c0: Tensor, w_ih: Tensor, w_hh: Tensor, b_ih: Tensor,
         b_hh: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """A one-layer LSTM over x (T, B, I): returns (outputs (T, B, H), h_T, c_T)."""
    h, c, outputs = h0, c0, []
    for t in range(x.shape[0]):
        h, c = lstm_cell(x[t], h, c, w_ih, w_hh, b_ih, b_hh)
        outputs.append(h)
    return torch.stack(outputs), h, c


def rnn_tanh_cell(x: Tensor, h: Tensor, w_ih: Tensor, w_hh: Tensor, b_ih: Tensor, b_hh: Tensor) -> Tensor:
    """The vanilla (Elman) RNN step h' = tanh(W_ih x + b_ih + W_hh h + b_hh), for comparison."""
    return torch.tanh(x @ w_ih.T + b_ih + h @ w_hh.T + b_hh)


GATES = {"rnn": (1, rnn_tanh_cell), "gru": (3, gru_cell), "lstm": (4, None)}


class RecurrentLM(nn.Module):
    """A character (or token) LM: embedding -> one recurrent layer written above -> linear head.
    ``cell`` is "gru", "lstm" or "rnn"; weights are initialised like PyTorch's (uniform +-1/sqrt(H)),
    times ``init_scale`` (to make gradients explode or vanish on purpose)."""

    def __init__(self, vocab: int, hidden: int = 128, emb: int = 32, cell: str = "gru", init_scale: float = 1.0):
        super().__init__()
        if cell not in GATES:
            raise ValueError(f"cell must be one of {sorted(GATES)}")
        self.cell, self.hidden = cell, hidden
        gates = GATES[cell][0]
        k = init_scale / math.sqrt(hidden)
        u = lambda *shape: nn.Parameter(torch.empty(*shape).uniform_(-k, k))
        self.embed = nn.Embedding(vocab, emb)
        self.w_ih, self.w_hh = u(gates * hidden, emb), u(gates * hidden, hidden)
        self.b_ih, self.b_hh = u(gates * hidden), u(gates * hidden)
        self.head = nn.Linear(hidden, vocab)

    def states(self, ids: Tensor) -> list[Tensor]:
        """Hidden states h_1..h_T for ids (B, T) (each retains its grad, for gradient-flow plots)."""
        x = self.embed(ids).transpose(0, 1)  # (T, B, E)
        B = ids.shape[0]
        h = x.new_zeros(B, self.hidden)
        c = x.new_zeros(B, self.hidden)
        params = (self.w_ih, self.w_hh, self.b_ih, self.b_hh)
        out = []
        for t in range(x.shape[0]):
            if self.cell == "lstm":
                h, c = lstm_cell(x[t], h, c, *params)
            else:
                h = GATES[self.cell][1](x[t], h, *params)
            out.append(h)
        return out

    def forward(self, ids: Tensor) -> Tensor:  # (B, T) -> logits (B, T, V)
        return self.head(torch.stack(self.states(ids), dim=1))
