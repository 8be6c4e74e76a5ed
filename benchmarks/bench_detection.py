"""Faster R-CNN (`pipelines/detection.yaml`) against torchvision's `fasterrcnn_resnet50_fpn`.

1. **torch latency** — the compiled pipeline with torchvision's state dict loaded (detections
   checked equal first) against torchvision's model, eval + `no_grad`, one 800×1066 detection
   (a 480×640 input, resized inside both models), interleaved AB/BA, median per side; the ratio
   composer / torchvision is the figure (target ≤ 1.05). Weights are torchvision's random init
   with a confident class, so both run the full second stage on real detections.
2. **onnxruntime / torch** — the pipeline exported once (`composer.export`, verify=False: the
   export tests cover parity) and run by onnxruntime (CPU provider) against the compiled model in
   torch, at batch 1 and 2 and inputs of 512×512 and 800×800 (both resized to 800×800 inside the
   model, as `min_size: 800` says), interleaved, median per side.
3. **export time** — `composer.export` (dynamo, dynamic batch/height/width, NMS inside) against
   torchvision's own model through the legacy TorchScript exporter at a fixed batch of one
   (`torch.onnx.export(dynamo=False)`; its dynamo export fails), each timed once.

    .venv/bin/python benchmarks/bench_detection.py [--reps 5] [--no-write]
"""

from __future__ import annotations

import argparse
import datetime as _dt
import io
import sys
import tempfile
import time
import warnings
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402
from torchvision.models import detection as tvd  # noqa: E402

import composer  # noqa: E402
from composer.runtime import Session  # noqa: E402
from composer.weights import map_state_dict  # noqa: E402
from _results import machine, median_ci, publish  # noqa: E402

SECTION = "## Detection"


def models():
    torch.manual_seed(0)
    tv = tvd.fasterrcnn_resnet50_fpn(weights=None, weights_backbone=None).eval()
    with torch.no_grad():
        tv.roi_heads.box_predictor.cls_score.weight.mul_(0.05)
        tv.roi_heads.box_predictor.cls_score.bias[1] += 5.0
    ours = composer.load(ROOT / "pipelines/detection.yaml").build().eval()
    mapped, _ = map_state_dict(ours, tv.state_dict(), "torchvision", ordered=False)
    ours.load_state_dict(mapped)
    return tv, ours


def image(b: int, h: int, w: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(b * 1000 + h)
    low = torch.rand(b, 3, h // 16, w // 16, generator=g)
    return torch.nn.functional.interpolate(low, size=(h, w), mode="bilinear", align_corners=False)


def timed(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def interleave(a, b, reps: int) -> tuple[list[float], list[float]]:
    ta, tb = [], []
    a(), b()                                          # warm-up
    for i in range(reps):
        first, second = (a, b) if i % 2 == 0 else (b, a)
        x, y = timed(first), timed(second)
        (ta, tb)[0 if first is a else 1].append(x)
        (ta, tb)[1 if first is a else 0].append(y)
    return ta, tb


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--no-write", action="store_true")
    args = ap.parse_args()
    tv, ours = models()
    lines = [f"`benchmarks/bench_detection.py`, {_dt.datetime.now(_dt.timezone.utc):%Y-%m-%d %H:%M} UTC. "
             f"Machine: {machine(load=True)}; {torch.get_num_threads()} intra-op threads.", ""]

    x = image(1, 480, 640)
    with torch.no_grad():
        ref, got = tv(list(x))[0], ours(image=x)
        n = int(got["count"][0])
        assert n == len(ref["boxes"]) > 0 and torch.allclose(got["boxes"][0, :n], ref["boxes"], atol=1e-3)
        ta, tb = interleave(lambda: ours(image=x), lambda: tv(list(x)), args.reps)
    (ma, la, ha), (mb, lb, hb) = median_ci(ta), median_ci(tb)
    lines += ["### torch eager, composer against torchvision (same weights, same detections)", "",
              "| input | detections | composer | torchvision | **ratio** | target ≤ 1.05 |", "|---|---:|---:|---:|---:|:--|",
              f"| 1×3×480×640 (800×1066 inside) | {n} | {ma * 1e3:,.0f} ms [{la * 1e3:,.0f}, {ha * 1e3:,.0f}] | "
              f"{mb * 1e3:,.0f} ms [{lb * 1e3:,.0f}, {hb * 1e3:,.0f}] | **{ma / mb:.3f}** | "
              f"{'met' if ma / mb <= 1.05 else 'missed'} |", ""]

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "detection.onnx"
        t_export = timed(lambda: composer.export(ours, path, verify=False))
        sess = Session(path, device="cpu")
        rows = []
        for b, s in [(1, 512), (1, 800), (2, 512), (2, 800)]:
            xb = image(b, s, s)
            feed = {"image": xb.numpy()}
            with torch.no_grad():
                to, tt = interleave(lambda: sess.run(feed), lambda: ours(image=xb), max(3, args.reps // 2 + 1))
            mo, mt = median_ci(to)[0], median_ci(tt)[0]
            rows.append(f"| {b} | {s}×{s} | {mo * 1e3:,.0f} ms | {mt * 1e3:,.0f} ms | **{mo / mt:.2f}** |")
        lines += ["### onnxruntime (CPU provider) against torch eager, the exported detector", "",
                  "| batch | input | onnxruntime | torch | **ratio** |", "|---:|---|---:|---:|---:|", *rows, ""]

        legacy = "failed"
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                t0 = time.perf_counter()
                torch.onnx.export(tv, ([x[0]],), io.BytesIO(), dynamo=False, opset_version=17)
                legacy = f"{time.perf_counter() - t0:.1f} s"
        except Exception as exc:  # report, do not hide
            legacy = f"failed ({type(exc).__name__})"
    lines += ["### export time", "",
              "| exporter | what | time |", "|---|---|---:|",
              f"| composer (dynamo) | dynamic B, H, W; NMS inside | {t_export:.1f} s |",
              f"| torchvision's model, legacy TorchScript exporter | fixed batch 1 | {legacy} |", "",
              "- Shared 2-core machine: absolute times vary run to run; the ratios measured in one run are the figures."]
    publish(SECTION, "\n".join(lines), write=not args.no_write)


if __name__ == "__main__":
    main()
