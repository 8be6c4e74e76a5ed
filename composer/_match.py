"""Export verification of detection outputs: padded detections compared as matched sets.

A detector's selection steps (top-k, thresholds, NMS) are discontinuous: two candidates whose
scores differ by less than float noise are ordered differently by two correct implementations,
and a box that moves by 1e-3 px can round its mask to the next pixel. On the random inputs of an
export check a trained detector finds many low-confidence, near-tied candidates, so an
element-wise comparison of its padded outputs fails although both sides are right. Here each
torch detection is matched to an onnxruntime detection of the same label whose box and score
agree within the export tolerance (masks: the thresholded masks differ at most along the
outline). A detection left unmatched on either side must be explained by a near-tie: a detection
of the same label on the other side overlaps it (IoU >= `NEIGHBOUR_IOU`) or lies within
`NEAR_SHARE` of the image scale of it (NMS kept one of two near-equal neighbours, top-k swapped two
near-equal candidates, or a proposal moved and its refined box with it), and the counts may differ by
at most `COUNT_SHARE` (at least 2); at least `MATCHED_SHARE` of all detections must match
exactly, so a systematic difference (every box shifted) still fails. The padding past `count`
must be empty.
"""

from __future__ import annotations

import math
from typing import Mapping, Optional

import numpy as np

FIELDS = ("boxes", "scores", "labels", "count")
NEIGHBOUR_IOU = 0.3
COUNT_SHARE = 0.2
MATCHED_SHARE = 0.5
NEAR_SHARE = 0.02


def detection_groups(pipe, output_names) -> dict[str, dict[str, str]]:
    """Outputs that are fields of one `detections` port: {group: {field: output name}}, only
    for groups whose boxes, scores, labels and count are all outputs."""
    graph = pipe.graph
    groups: dict[str, dict[str, str]] = {}
    for name in output_names:
        ref = pipe.resolved.outputs[name]
        if ref.field is None:
            continue
        port = graph.port_of(ref)
        t = graph.types.get(ref.node, {}).get(port)
        if t is not None and t.kind == "detections":
            groups.setdefault(f"{ref.node}.{port}", {})[ref.field] = name
    return {g: f for g, f in groups.items() if all(k in f for k in FIELDS)}


def compare_detections(got: Mapping[str, np.ndarray], ref: Mapping[str, np.ndarray], atol: float,
                       rtol: float) -> dict:
    """Match onnxruntime detections (`got`, by field) to torch's (`ref`); the figures and `ok`."""
    if any(np.shape(got[f]) != np.shape(ref[f]) for f in ref):
        return {"ok": False, "matched": 0, "detections": 0, "reason": "shapes differ"}
    boxes_scale = max(1.0, float(np.abs(ref["boxes"]).max()) if ref["boxes"].size else 1.0)
    masks = "masks" in ref
    total = matched = unmatched = 0
    worst_box = worst_score = 0.0
    worst_mask: Optional[float] = None
    ok = True
    for b in range(ref["count"].shape[0]):
        nt, no = int(ref["count"][b]), int(got["count"][b])
        k = ref["scores"].shape[1]
        if not (0 <= no <= k) or not _empty_after(got, b, no):
            ok = False
            continue
        used = np.zeros(no, dtype=bool)
        pairs: list[int] = []
        hits = 0
        for i in range(nt):
            box, score, label = ref["boxes"][b, i], ref["scores"][b, i], ref["labels"][b, i]
            d_box = np.abs(got["boxes"][b, :no] - box).max(axis=1) if no else np.zeros(0)
            d_score = np.abs(got["scores"][b, :no] - score) if no else np.zeros(0)
            fits = (~used & (got["labels"][b, :no] == label) & (d_box <= atol * boxes_scale + rtol * np.abs(box).max())
                    & (d_score <= atol + rtol * abs(score)))
            if masks and fits.any():
                for j in np.flatnonzero(fits):
                    differ = mask_difference(got["masks"][b, j], ref["masks"][b, i], box)
                    fits[j] = differ <= 1.0
            if not fits.any():
                continue
            j = int(np.flatnonzero(fits)[np.argmin(d_box[fits])])
            used[j] = True
            pairs.append(i)
            hits += 1
            worst_box, worst_score = max(worst_box, float(d_box[j])), max(worst_score, float(d_score[j]))
            if masks:
                m = mask_difference(got["masks"][b, j], ref["masks"][b, i], box)
                worst_mask = m if worst_mask is None else max(worst_mask, m)
        paired = np.zeros(nt, dtype=bool)
        paired[pairs] = True
        if abs(nt - no) > max(2, math.ceil(COUNT_SHARE * max(nt, no))):
            ok = False
        for mine, theirs, n_mine, n_theirs, done in ((ref, got, nt, no, paired), (got, ref, no, nt, used)):
            for i in np.flatnonzero(~done[:n_mine]):
                if not _has_neighbour(mine, theirs, b, i, n_theirs, NEAR_SHARE * boxes_scale):
                    ok = False
        unmatched += (nt - hits) + (no - hits)
        total += max(nt, no)
        matched += hits
    if total and matched < MATCHED_SHARE * total:   # a systematic difference leaves most unmatched
        ok = False
    out = {"ok": ok, "matched": matched, "detections": total, "unmatched": unmatched, "max_box_diff": worst_box,
           "max_score_diff": worst_score}
    if masks:
        out["max_mask_outline_share"] = worst_mask
    return out


def _has_neighbour(mine: Mapping[str, np.ndarray], theirs: Mapping[str, np.ndarray], b: int, i: int, n: int,
                   near: float) -> bool:
    """A detection of the same label on the other side overlaps detection i (IoU >= NEIGHBOUR_IOU)
    or lies within `near` pixels of it (thin boxes barely overlap when shifted by a pixel)."""
    if n == 0:
        return False
    box = mine["boxes"][b, i]
    other = theirs["boxes"][b, :n]
    same = theirs["labels"][b, :n] == mine["labels"][b, i]
    x1, y1 = np.maximum(other[:, 0], box[0]), np.maximum(other[:, 1], box[1])
    x2, y2 = np.minimum(other[:, 2], box[2]), np.minimum(other[:, 3], box[3])
    inter = np.clip(x2 - x1, 0, None) * np.clip(y2 - y1, 0, None)
    area = (box[2] - box[0]) * (box[3] - box[1])
    areas = (other[:, 2] - other[:, 0]) * (other[:, 3] - other[:, 1])
    iou = inter / np.maximum(area + areas - inter, 1e-12)
    close = np.abs(other - box).max(axis=1) <= near
    return bool(np.any(same & ((iou >= NEIGHBOUR_IOU) | close)))


def _empty_after(got: Mapping[str, np.ndarray], b: int, n: int) -> bool:
    """Slots past the count hold box 0, score 0, label -1 (and empty masks)."""
    empty = (np.all(got["boxes"][b, n:] == 0) and np.all(got["scores"][b, n:] == 0)
             and np.all(got["labels"][b, n:] == -1))
    return bool(empty and ("masks" not in got or np.all(got["masks"][b, n:] == 0)))


def mask_difference(a: np.ndarray, b: np.ndarray, box: np.ndarray) -> float:
    """Pixels where the thresholded masks differ, as a share of the box outline (a one-pixel
    shift of the pasted mask differs along at most its outline: 1.0)."""
    differ = int(np.count_nonzero((a > 0.5) != (b > 0.5)))
    outline = 2.0 * (abs(float(box[2] - box[0])) + abs(float(box[3] - box[1]))) + 8.0
    return differ / outline
