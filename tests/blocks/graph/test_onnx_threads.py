"""The exported sums stay exact in onnxruntime with several threads on graphs whose edges share
targets (ScatterND races there in onnxruntime 1.31; the sums export as ScatterElements)."""

from __future__ import annotations

import warnings

import numpy as np
import onnxruntime as ort
import torch

from blocks.graph.scatter import scatter_sum


class _Sum(torch.nn.Module):
    def forward(self, x, edge_index):
        return scatter_sum(x.index_select(0, edge_index[0]), edge_index[1], x.shape[0])


def test_scatter_sum_in_onnxruntime_with_two_threads(tmp_path):
    g = torch.Generator().manual_seed(0)
    trace = (torch.randn(20, 16, generator=g), torch.randint(0, 20, (2, 60), generator=g))
    path = tmp_path / "sum.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(_Sum(), trace, str(path), dynamo=True, verbose=False,
                          dynamic_shapes=({0: torch.export.Dim("N", min=2)}, {1: torch.export.Dim("E", min=2)}))
    x, ei = torch.randn(2000, 16, generator=g), torch.randint(0, 2000, (2, 20000), generator=g)
    want = _Sum()(x, ei).numpy()
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 2
    sess = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    names = [i.name for i in sess.get_inputs()]
    for _ in range(3):
        got = sess.run(None, dict(zip(names, (x.numpy(), ei.numpy()))))[0]
        assert np.abs(got - want).max() < 1e-4
