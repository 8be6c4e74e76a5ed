"""Custom torch ops that export to chosen ONNX operators.

Some layers compute in torch with a library kernel that has no faithful ONNX lowering (an LSTM
with a projection, a recurrent layer over padded sequences). Such a block calls, while being
exported, a custom op (`torch.library.custom_op`) whose translation to ONNX is written here by
hand: `translation(op)` registers it, and `composer.export` passes every registered one to
`torch.onnx.export(custom_translation_table=...)`. A translation is a plain function of
onnxscript values and the op's non-tensor arguments, building nodes with `onnxscript.opset18`.
"""

from __future__ import annotations

from typing import Callable

TRANSLATIONS: dict = {}


def translation(op) -> Callable[[Callable], Callable]:
    """Decorator: `fn` is the ONNX translation of the custom op overload `op` (e.g.
    `torch.ops.composer.rnn_layer.default`)."""
    def register(fn: Callable) -> Callable:
        if op in TRANSLATIONS and TRANSLATIONS[op] is not fn:
            raise ValueError(f"{op} already has an ONNX translation")
        TRANSLATIONS[op] = fn
        return fn
    return register
