"""Recurrent layers: `lstm` and `gru`, over padded sequences, exported through ONNX's own operators.

The modules are `nn.LSTM` and `nn.GRU` themselves (batch first), so parameter names
(`weight_ih_l0`, `weight_hh_l0_reverse`, `weight_hr_l0`, ...) and initialisation are torch's and
plain PyTorch checkpoints load unchanged. What they add is the padding: with a `mask` [B, T]
(1 = a real step) or `lengths` [B], padded steps neither feed the state nor appear in the
outputs, so each sequence's outputs equal running it alone at its true length. In torch that is
a packed sequence; in an export, ONNX's `sequence_lens` (see `_onnx_rnn.py`). A mask may have
holes: its real steps are moved to the front of each row, in order, and the outputs put back.
"""

from __future__ import annotations

import warnings
from typing import ClassVar, Optional

import torch
from pydantic import NonNegativeInt
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from composer.block import Block, In
from composer.params import PosInt, Prob
from composer.registry import register
from composer.types import (InferError, PortType, expect_float, expect_rank, expect_static, register_kind,
                            unify_shapes)

from ._onnx_rnn import rnn_layer

# The final states of every layer and direction: h [layers·D, B, H_out] and, for an LSTM, c [layers·D, B, H].
register_kind("rnn_state", None)

# torch's gate blocks, in the order ONNX wants them: LSTM i,f,g,o -> i,o,f,c; GRU r,z,n -> z,r,h
ONNX_GATES = {"lstm": (0, 3, 1, 2), "gru": (1, 0, 2)}


def compaction(keep: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """For a [B, T] boolean mask: `src`, which step fills each slot when a row's real steps move
    to its front in order (padding after them), and `pos`, the slot each step went to."""
    b, t = keep.shape
    m = keep.to(torch.int64)
    lengths = m.sum(dim=1, keepdim=True)                                   # (B, 1)
    pos = torch.where(keep, m.cumsum(1) - 1, lengths + (1 - m).cumsum(1) - 1)   # (B, T), a permutation per row
    steps = torch.arange(t, device=keep.device).expand(b, t)
    src = torch.zeros_like(pos).scatter(1, pos, steps)                     # (B, T), its inverse
    return src, pos


def _take(x: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """x (B, T, C) reordered along T by index (B, T)."""
    return x.gather(1, index.unsqueeze(-1).expand(-1, -1, x.shape[-1]))


class _Recurrent:
    """The forward that `LSTM` and `GRU` share (mixed in before the nn class it extends)."""

    rnn_kind: ClassVar[str] = ""   # "lstm" or "gru" (nn.RNNBase already has a `mode`)

    def forward(self, x: torch.Tensor, mask: Optional[torch.Tensor] = None,
                lengths: Optional[torch.Tensor] = None):
        """x (B, T, F) -> (sequence (B, T, D·H_out), last (B, D·H_out), {"h": ..., "c": ...})."""
        exporting = torch.compiler.is_exporting()
        if mask is None and lengths is None:       # the plain call: nothing but nn's kernel (or ONNX's operator)
            return self._outputs(*(self._export_forward(x, None) if exporting else self._plain(x)))
        t = x.shape[1]
        pos = None
        if mask is not None:
            keep = mask.to(torch.bool)
            lengths = keep.sum(dim=1)
            # real steps first; in torch only where the mask has holes (a prefix mask needs no moving)
            if exporting or not torch.equal(keep, torch.arange(t, device=keep.device)[None, :] < lengths[:, None]):
                src, pos = compaction(keep)
                x = _take(x, src)
        lengths = lengths.to(torch.int64)
        real = lengths > 0                                                 # (B,) rows with a real step
        lengths = lengths.clamp(1, t)
        if exporting:
            y, h, c = self._export_forward(x, lengths)
        else:
            every_row = bool(real.all())
            if every_row and int(lengths.min()) == t:                      # nothing padded after all
                return self._outputs(*self._plain(x))
            y, h, c = self._packed(x, lengths)                             # padded steps come out zero
        if exporting or not every_row:                                     # rows with no real step: all zero
            valid = (torch.arange(t, device=x.device)[None, :] < lengths[:, None]) & real[:, None]   # (B, T)
            y = y * valid.unsqueeze(-1).to(y.dtype)
            row = real[None, :, None].to(y.dtype)                          # (1, B, 1)
            h = h * row
            c = None if c is None else c * row
        if pos is not None:
            y = _take(y, pos)                                              # back to each step's place
        return self._outputs(y, h, c)

    def _outputs(self, y: torch.Tensor, h: torch.Tensor, c: Optional[torch.Tensor]):
        return y, self._last(h), ({"h": h} if c is None else {"h": h, "c": c})

    def _last(self, h: torch.Tensor) -> torch.Tensor:
        """The last layer's final states, directions side by side: h (layers·D, B, H) -> (B, D·H)."""
        return torch.cat([h[-2], h[-1]], dim=-1) if self.bidirectional else h[-1]

    def _plain(self, x: torch.Tensor):
        y, hx = super().forward(x)
        return (y, *hx) if self.rnn_kind == "lstm" else (y, hx, None)

    def _packed(self, x: torch.Tensor, lengths: torch.Tensor):
        packed = pack_padded_sequence(x, lengths.cpu(), batch_first=True, enforce_sorted=False)
        y, hx = super().forward(packed)
        y, _ = pad_packed_sequence(y, batch_first=True, total_length=x.shape[1])
        return (y, *hx) if self.rnn_kind == "lstm" else (y, hx, None)

    def _export_forward(self, x: torch.Tensor, lengths: Optional[torch.Tensor]):
        """Layer by layer through `composer::rnn_layer` (one ONNX LSTM/GRU node each)."""
        seq_lens = None if lengths is None else lengths.to(torch.int32)
        h_in = x.transpose(0, 1)                                           # (T, B, F)
        hs, cs = [], []
        for layer in range(self.num_layers):
            w, r, bias, w_hr = self._onnx_weights(layer)
            y, h, c = rnn_layer(h_in, w, r, bias, seq_lens, self.rnn_kind, self.hidden_size, self.bidirectional)
            if w_hr is not None:                                           # y (T, D, B, H) -> (T, D, B, P)
                y = y @ w_hr.transpose(1, 2)
                h = h @ w_hr.transpose(1, 2)                               # (D, B, P)
            h_in = y.permute(0, 2, 1, 3).flatten(2)                        # (T, B, D·H)
            hs.append(h)
            cs.append(c)
        return h_in.transpose(0, 1), torch.cat(hs), torch.cat(cs) if self.rnn_kind == "lstm" else None

    def _param(self, name: str, layer: int, direction: int) -> Optional[torch.Tensor]:
        return getattr(self, f"{name}_l{layer}{'_reverse' if direction else ''}", None)

    def _onnx_weights(self, layer: int):
        """W (D, G·H, I), R (D, G·H, H), B (D, 2·G·H) of one layer in ONNX's gate order, and the LSTM
        projection W_hr (D, P, H) or None. With a projection the recurrence runs on the unprojected
        state: R·(W_hr·h) = (R·W_hr)·h, so R becomes R·W_hr (G·H x H) and W_hr is applied to the
        outputs afterwards."""
        hid, dirs = self.hidden_size, range(2 if self.bidirectional else 1)
        order = torch.tensor([g * hid + i for g in ONNX_GATES[self.rnn_kind] for i in range(hid)],
                             device=self.weight_ih_l0.device)              # torch's gate rows in ONNX's order

        def stacked(name: str) -> Optional[torch.Tensor]:
            ps = [self._param(name, layer, d) for d in dirs]
            return None if ps[0] is None else torch.stack(ps)             # (D, ...)

        w, r, w_hr = stacked("weight_ih"), stacked("weight_hh"), stacked("weight_hr")
        if w_hr is not None:
            r = r @ w_hr                                                   # (D, G·H, P) @ (D, P, H) -> (D, G·H, H)
        b_ih, b_hh = stacked("bias_ih"), stacked("bias_hh")
        bias = (w.new_zeros(w.shape[0], 2 * w.shape[1]) if b_ih is None else
                torch.cat([b_ih.index_select(1, order), b_hh.index_select(1, order)], dim=1))
        return w.index_select(1, order), r.index_select(1, order), bias, w_hr


class LSTM(_Recurrent, nn.LSTM):
    """nn.LSTM (batch first) over padded sequences; returns (sequence, last, {h, c})."""
    rnn_kind = "lstm"


class GRU(_Recurrent, nn.GRU):
    """nn.GRU (batch first) over padded sequences; returns (sequence, last, {h})."""
    rnn_kind = "gru"


# ---- the blocks ----------------------------------------------------------------------------


class _RecurrentBlock(Block):
    family: ClassVar[str] = "sequence"
    inputs: ClassVar = {
        "x": In("sequence", doc="[B, T, F] (a `series` or a `sequence`)"),
        "mask": In("mask", doc="[B, T], 1 for real steps: padded ones are skipped", optional=True),
        "lengths": In("count", "tensor", doc="[B] int: each sequence's true length (instead of a mask)",
                      optional=True),
    }
    outputs: ClassVar = ("sequence", "last", "state")
    gates: ClassVar[int] = 0
    hidden: PosInt
    layers: PosInt = 1
    bidirectional: bool = False
    dropout: Prob = 0.0     # between stacked layers, in training only (torch's semantics)
    bias: bool = True

    def _h_out(self) -> int:
        return self.hidden

    def _features(self, x: PortType, mask: Optional[PortType], lengths: Optional[PortType]) -> int:
        expect_rank(x, 3, "x", " [B, T, F]")
        expect_float(x, "x")
        f = expect_static(x.shape[2], "x", f"the feature size (last dim) of an {self.name} input")
        if mask is not None and lengths is not None:
            raise InferError("give `mask` or `lengths`, not both: they say the same thing", port="lengths",
                             expected="one of `mask` [B, T] and `lengths` [B]", found="both")
        if mask is not None:
            expect_rank(mask, 2, "mask", " [B, T]")
            unify_shapes([("x", x.with_(shape=x.shape[:2])), ("mask", mask)])
        if lengths is not None:
            expect_rank(lengths, 1, "lengths", " [B]")
            if lengths.dtype not in ("int64", "int32"):
                raise InferError("port `lengths` needs integer lengths", port="lengths", code="E303",
                                 expected="int64 (or int32)", found=lengths.dtype)
            unify_shapes([("x", x.with_(shape=x.shape[:1])), ("lengths", lengths)])
        return f

    def infer(self, x: PortType, mask: Optional[PortType] = None,
              lengths: Optional[PortType] = None) -> dict[str, PortType]:
        self._features(x, mask, lengths)
        b, t = x.shape[0], x.shape[1]
        d = 2 if self.bidirectional else 1
        h_out = self._h_out()
        states = [("h", PortType("tensor", (self.layers * d, b, h_out), x.dtype))]
        if self.gates == 4:
            states.append(("c", PortType("tensor", (self.layers * d, b, self.hidden), x.dtype)))
        return {"sequence": PortType("sequence", (b, t, d * h_out), x.dtype),
                "last": PortType("vector", (b, d * h_out), x.dtype),
                "state": PortType("rnn_state", None, x.dtype, fields=tuple(states))}

    def param_count(self, x: PortType, mask: Optional[PortType] = None, lengths: Optional[PortType] = None) -> int:
        f = self._features(x, mask, lengths)
        d = 2 if self.bidirectional else 1
        g, h, p = self.gates, self.hidden, self._h_out()
        total = 0
        for layer in range(self.layers):
            i = f if layer == 0 else d * p
            per = g * h * (i + p) + (2 * g * h if self.bias else 0) + (p * h if p != h else 0)
            total += d * per
        return total

    def _module(self, cls, f: int, **extra) -> nn.Module:
        with warnings.catch_warnings():   # torch warns about dropout with one layer; it is simply unused
            warnings.simplefilter("ignore", UserWarning)
            return cls(f, self.hidden, num_layers=self.layers, bias=self.bias, batch_first=True,
                       dropout=self.dropout, bidirectional=self.bidirectional, **extra)


@register
class LSTMBlock(_RecurrentBlock):
    """LSTM over [B, T, F] (stacked, bidirectional, projected), skipping padded steps; nn.LSTM's layout.

    Outputs: `sequence` [B, T, D·H] (zero at padded steps), `last` [B, D·H] (the last layer's final
    state of each sequence at its true length, directions concatenated) and `state` ({h, c},
    [layers·D, B, H]). With `proj_size` P the hidden state is projected to P (h and the outputs
    have P features, c keeps H), as in nn.LSTM.
    """
    name: ClassVar[str] = "lstm"
    gates: ClassVar[int] = 4
    proj_size: NonNegativeInt = 0

    def _h_out(self) -> int:
        return self.proj_size or self.hidden

    def infer(self, x: PortType, mask: Optional[PortType] = None,
              lengths: Optional[PortType] = None) -> dict[str, PortType]:
        if self.proj_size >= self.hidden:
            raise InferError(f"proj_size ({self.proj_size}) must be smaller than hidden ({self.hidden})",
                             param="proj_size", expected=f"0 (no projection) or 1..{self.hidden - 1}",
                             found=str(self.proj_size))
        return super().infer(x, mask, lengths)

    def build(self, x: PortType, mask: Optional[PortType] = None, lengths: Optional[PortType] = None) -> nn.Module:
        return self._module(LSTM, self._features(x, mask, lengths), proj_size=self.proj_size)


@register
class GRUBlock(_RecurrentBlock):
    """GRU over [B, T, F] (stacked, bidirectional), skipping padded steps; nn.GRU's layout.

    Outputs: `sequence` [B, T, D·H] (zero at padded steps), `last` [B, D·H] (the last layer's final
    state of each sequence at its true length, directions concatenated) and `state` ({h},
    [layers·D, B, H]).
    """
    name: ClassVar[str] = "gru"
    gates: ClassVar[int] = 3

    def build(self, x: PortType, mask: Optional[PortType] = None, lengths: Optional[PortType] = None) -> nn.Module:
        return self._module(GRU, self._features(x, mask, lengths))
