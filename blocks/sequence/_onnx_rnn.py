"""One recurrent layer as a custom op that exports to ONNX's own LSTM and GRU operators.

torch's ONNX lowering of `nn.LSTM`/`nn.GRU` knows neither padded sequences (`sequence_lens`) nor
an LSTM's projection (`proj_size`, which it exports as an invalid graph). While being exported,
`lstm` and `gru` instead run layer by layer through `composer::rnn_layer`, whose translation is
a single ONNX `LSTM` or `GRU` node with `sequence_lens`: onnxruntime then skips padded steps in
both directions, as torch's packed sequences do. The weights come in ONNX's layout (see
`rnn_layer`); `rnn.py` converts torch's.

Called eagerly, the op computes the same function step by step in torch: a reference of the
ONNX semantics, used by tests, never on the fast path.
"""

from __future__ import annotations

from typing import Optional

import torch

from composer._onnx_ops import translation


@torch.library.custom_op("composer::rnn_layer", mutates_args=())
def rnn_layer(x: torch.Tensor, w: torch.Tensor, r: torch.Tensor, b: torch.Tensor, lengths: Optional[torch.Tensor],
              mode: str, hidden: int, bidirectional: bool) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """One layer, ONNX's operator semantics. x (T, B, I); w (D, G·H, I), r (D, G·H, H), b (D, 2·G·H)
    (input then recurrent biases) with the gates in ONNX's order: LSTM i, o, f, c; GRU z, r, h with
    the reset gate applied after the recurrent product (`linear_before_reset`, as torch computes it);
    lengths (B,) int32, or None for full length. Returns y (T, D, B, H), zero after each sequence's
    length, and the final states h and c (D, B, H); a GRU returns h twice."""
    t, batch, _ = x.shape
    gates = 4 if mode == "lstm" else 3
    lens = torch.full((batch,), t, dtype=torch.int64) if lengths is None else lengths.to(torch.int64)
    steps = torch.arange(t)[:, None]                                   # (T, 1)
    active = steps < lens[None, :]                                     # (T, B)
    ys, hs, cs = [], [], []
    for d in range(w.shape[0]):
        # the reverse direction reads each sequence backwards from its own last real step
        order = torch.where(active, lens[None, :] - 1 - steps, steps) if d else steps.expand(t, batch)   # (T, B)
        xs = x.gather(0, order[..., None].expand_as(x))
        wx = xs @ w[d].T + b[d, : gates * hidden]                      # (T, B, G·H)
        h = x.new_zeros(batch, hidden)
        c = x.new_zeros(batch, hidden)
        out = []
        for k in range(t):
            rh = h @ r[d].T + b[d, gates * hidden:]                    # (B, G·H)
            on = active[k][:, None]
            if mode == "lstm":
                i, o, f, g = (wx[k] + rh).chunk(4, dim=-1)
                c_new = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
                h_new = torch.sigmoid(o) * torch.tanh(c_new)
                c = torch.where(on, c_new, c)
            else:
                xz, xr, xh = wx[k].chunk(3, dim=-1)
                hz, hr, hh = rh.chunk(3, dim=-1)
                z = torch.sigmoid(xz + hz)
                n = torch.tanh(xh + torch.sigmoid(xr + hr) * hh)
                h_new = (1 - z) * n + z * h
            h = torch.where(on, h_new, h)
            out.append(h_new * on)
        y = torch.stack(out)                                           # (T, B, H), in reading order
        ys.append(y.gather(0, order[..., None].expand_as(y)) if d else y)
        hs.append(h)
        cs.append(c if mode == "lstm" else h)
    return torch.stack(ys, dim=1), torch.stack(hs), torch.stack(cs)


@rnn_layer.register_fake
def _rnn_layer_fake(x, w, r, b, lengths, mode, hidden, bidirectional):
    t, batch, _ = x.shape
    d = w.shape[0]
    return x.new_empty(t, d, batch, hidden), x.new_empty(d, batch, hidden), x.new_empty(d, batch, hidden)


@translation(torch.ops.composer.rnn_layer.default)
def _rnn_layer_onnx(x, w, r, b, lengths, mode: str, hidden: int, bidirectional: bool):
    from onnxscript import opset18 as op

    direction = "bidirectional" if bidirectional else "forward"
    if mode == "lstm":
        y, h, c = op.LSTM(x, w, r, b, lengths, hidden_size=hidden, direction=direction)
        return y, h, c
    y, h = op.GRU(x, w, r, b, lengths, hidden_size=hidden, direction=direction, linear_before_reset=1)
    return y, h, op.Identity(h)
