"""A simple layered SVG layout of a `View`, for the HTML page when Graphviz is not installed.

Nodes go on layers by longest path from the inputs (in written order, so a cycle in an
invalid spec cannot loop), ordered within a layer by the mean position of their
predecessors; edges are cubic curves. Clusters are not boxed here (each node's panel names
its sub-pipeline). It is plainer than Graphviz's drawing, but it needs nothing installed.
"""

from __future__ import annotations

from typing import Optional
from xml.sax.saxutils import escape

from . import style as S
from .dot import clean, figures
from .view import View, VNode, short_value

CHAR_W = 6.6
LINE_H = 15
PAD = 10
GAP_MAJOR = 70     # between layers
GAP_MINOR = 24     # between nodes of a layer


def _x(s: str) -> str:
    return escape(clean(s), {'"': "&quot;", "'": "&#39;"})


def _lines(n: VNode) -> list[tuple[str, str]]:
    """(text, css class) rows of a node's box."""
    rows = [(n.name + (f" ×{n.count}" if n.count > 1 else ""), "t")]
    if n.role in ("input", "output"):
        rows.append((f"{n.role}: {n.type}", "k"))
    elif n.role == "port":
        rows.append((f"in: {n.out_ports.get('out') or n.type}", "k"))
    elif n.role == "subpipeline":
        rows.append((f"{n.type} · {n.blocks} blocks", "k"))
    else:
        rows.append((n.type + (" · frozen" if n.frozen else ""), "k"))
    if n.cluster:
        rows.append((f"in {n.cluster}", "k"))
    for k, v in list(n.key_params.items())[:6]:
        rows.append((f"{k}={short_value(v)}", "p"))
    fig = figures(n) if n.role in ("block", "group", "subpipeline") else ""
    if fig:
        rows.append((fig, "p"))
    for e in n.errors[:2]:
        rows.append((e if len(e) <= 60 else e[:59] + "…", "e"))
    return rows


def to_svg(view: View, rankdir: str = "TB") -> str:
    order = list(view.nodes.values())
    index = {n.key: i for i, n in enumerate(order)}
    preds: dict[str, list[str]] = {n.key: [] for n in order}
    for e in view.edges:
        if index[e.src] < index[e.dst] or view.nodes[e.src].role == "input":
            preds[e.dst].append(e.src)
    layer: dict[str, int] = {}
    for n in order:
        layer[n.key] = max((layer.get(p, 0) + 1 for p in preds[n.key] if p in layer), default=0)
    for n in order:  # outputs sit on the last layer
        if n.role == "output":
            layer[n.key] = max(layer.values(), default=0)
    rows = {n.key: _lines(n) for n in order}
    size = {k: (max(len(t) for t, _ in r) * CHAR_W + 2 * PAD, len(r) * LINE_H + 2 * PAD - 4) for k, r in rows.items()}
    layers: dict[int, list[str]] = {}
    for n in order:
        layers.setdefault(layer[n.key], []).append(n.key)

    horizontal = rankdir in ("LR", "RL")
    pos: dict[str, tuple[float, float]] = {}   # centre of each box
    major = 40.0
    for li in sorted(layers):
        keys = layers[li]
        if li > 0:
            def bary(k: str) -> float:
                ps = [pos[p][1 if horizontal else 0] for p in preds[k] if p in pos]
                return sum(ps) / len(ps) if ps else float(index[k])
            keys.sort(key=bary)
        thick = max((size[k][0] if horizontal else size[k][1]) for k in keys)
        minor = 20.0
        for k in keys:
            w, h = size[k]
            if horizontal:
                pos[k] = (major + thick / 2, minor + h / 2)
                minor += h + GAP_MINOR
            else:
                pos[k] = (minor + w / 2, major + thick / 2)
                minor += w + GAP_MINOR
        major += thick + GAP_MAJOR
    width = max((pos[k][0] + size[k][0] / 2 for k in pos), default=100) + 40
    height = max((pos[k][1] + size[k][1] / 2 for k in pos), default=100) + 40

    out = [f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {width:.0f} {height:.0f}" '
           f'width="{width:.0f}pt" height="{height:.0f}pt" font-family="{S.FONT}">',
           '<defs><marker id="arrow" viewBox="0 0 10 10" refX="10" refY="5" markerWidth="7" markerHeight="7" '
           f'orient="auto-start-reverse"><path d="M 0 0 L 10 5 L 0 10 z" fill="{S.EDGE}"/></marker></defs>',
           '<g id="graph0" class="graph">']
    for e in view.edges:
        (x1, y1), (x2, y2) = pos[e.src], pos[e.dst]
        (w1, h1), (w2, h2) = size[e.src], size[e.dst]
        if horizontal:
            x1, x2 = x1 + w1 / 2, x2 - w2 / 2
            mid = (x1 + x2) / 2
            d = f"M{x1:.1f},{y1:.1f} C{mid:.1f},{y1:.1f} {mid:.1f},{y2:.1f} {x2:.1f},{y2:.1f}"
        else:
            y1, y2 = y1 + h1 / 2, y2 - h2 / 2
            mid = (y1 + y2) / 2
            d = f"M{x1:.1f},{y1:.1f} C{x1:.1f},{mid:.1f} {x2:.1f},{mid:.1f} {x2:.1f},{y2:.1f}"
        color = S.RED if e.red else (S.EDGE if e.type else "#9e9e9e")
        label = " ".join(x for x in (e.ports, e.type or "") if x)
        if e.errors:
            label = (label + " — " if label else "") + e.errors[0][:80]
        out.append(f'<g id="{e.id}" class="edge cedge{" failed" if e.red else ""}"><title>{_x(e.tooltip)}</title>'
                   f'<path d="{d}" fill="none" stroke="{color}" stroke-width="{2.2 if e.red else 1.2}" '
                   f'marker-end="url(#arrow)"{"" if e.type or e.red else " stroke-dasharray=" + chr(34) + "5,4" + chr(34)}/>'
                   f'<text x="{(x1 + x2) / 2 + 4:.1f}" y="{(y1 + y2) / 2:.1f}" font-size="9" '
                   f'fill="{S.RED_TEXT if e.red else "#333"}">{_x(label)}</text></g>')
    for n in order:
        cx, cy = pos[n.key]
        w, h = size[n.key]
        fill, border = S.node_colors(n.role, n.family)
        if n.red:
            fill, border = S.RED_FILL, S.RED
        rx = 14 if n.role == "port" else (2 if n.role in ("input", "output") else 8)
        dash = ' stroke-dasharray="5,3"' if not n.checked else ""
        sw = 2.5 if n.red else (1.6 if n.role in ("input", "output") else 1)
        cls = f"node cnode role-{n.role}" + (" failed" if n.red else "")
        out.append(f'<g id="{n.id}" class="{cls}"><title>{_x(n.name)}</title>'
                   f'<rect x="{cx - w / 2:.1f}" y="{cy - h / 2:.1f}" width="{w:.1f}" height="{h:.1f}" rx="{rx}" '
                   f'fill="{fill}" stroke="{border}" stroke-width="{sw}"{dash}/>')
        if n.count > 1:
            out.append(f'<rect x="{cx - w / 2 + 3:.1f}" y="{cy - h / 2 + 3:.1f}" width="{w - 6:.1f}" '
                       f'height="{h - 6:.1f}" rx="{max(rx - 2, 0)}" fill="none" stroke="{border}"/>')
        y = cy - h / 2 + PAD + 9
        for text, kind in rows[n.key]:
            attrs = {"t": 'font-size="12" font-weight="bold"', "k": f'font-size="10" fill="{S.GREY_TEXT}"',
                     "p": 'font-size="10"', "e": f'font-size="10" fill="{S.RED_TEXT}"'}[kind]
            out.append(f'<text x="{cx:.1f}" y="{y:.1f}" text-anchor="middle" {attrs}>{_x(text)}</text>')
            y += LINE_H
        out.append("</g>")
    out.append("</g></svg>")
    return "\n".join(out)


def layout_note(dot_missing: bool) -> Optional[str]:
    return ("Simplified layout: Graphviz's `dot` is not installed (apt-get install graphviz) — "
            "install it for the full drawing with sub-pipeline clusters.") if dot_missing else None
