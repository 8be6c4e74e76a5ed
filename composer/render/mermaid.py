"""Mermaid flowchart source from a `View`, to paste into Markdown (GitHub, GitLab, docs sites).

Every text goes through `text()`: characters that mean something to Mermaid or to HTML
(`" # & < > \\ | ;` and the backtick) become Mermaid entity codes (`#34;`), newlines become
`<br/>`. Ids are generated (`n0`, `c0`), so no name can break the syntax.
"""

from __future__ import annotations

import re
from typing import Optional

from . import style as S
from .dot import clean, figures, wrap
from .view import View, VNode, short_value

_SPECIAL = set('"#&<>\\|;`')


def text(s: str) -> str:
    """Mermaid-safe label text (entity codes for every special character)."""
    out = []
    for ch in clean(s):
        if ch == "\n":
            out.append("<br/>")
        elif ch in _SPECIAL:
            out.append(f"#{ord(ch)};")
        else:
            out.append(ch)
    return "".join(out)


def _multiline(s: str, width: int = 44, max_lines: int = 3) -> str:
    ls = wrap(s, width)[:max_lines]
    return "<br/>".join(text(x) for x in ls)


def node_label(n: VNode) -> str:
    title = text(n.name) + (f" ×{n.count}" if n.count > 1 else "")
    parts = [f"<b>{title}</b>"]
    if n.role in ("input", "output"):
        parts.append(text(f"{n.role}: {n.type}"))
    elif n.role == "port":
        parts.append(text(f"in: {n.out_ports.get('out') or n.type}"))
    elif n.role == "subpipeline":
        parts.append(text(f"{n.type} · {n.blocks} blocks"))
    else:
        parts.append(text(n.type + (" · frozen" if n.frozen else "") + (" · pre-processing" if n.stage == "pre" else "")))
    if n.key_params:
        parts.append(text(", ".join(f"{k}={short_value(v)}" for k, v in list(n.key_params.items())[:6])))
    if n.description and n.role != "port":
        parts.append("<i>" + _multiline(n.description, 44, 2) + "</i>")
    fig = figures(n) if n.role in ("block", "group", "subpipeline") else ""
    if fig:
        parts.append(text(fig))
    if not n.checked and not n.red:
        parts.append(text("not checked (upstream error)"))
    for e in n.errors[:2]:
        parts.append(_multiline(e))
    return "<br/>".join(parts)


_SHAPES = {
    "input": ('[/"', '"/]'),
    "output": ('[\\"', '"\\]'),
    "port": ('(["', '"])'),
    "subpipeline": ('[["', '"]]'),
    "group": ('[["', '"]]'),
    "block": ('("', '")'),
}


def _class_name(family: str) -> str:
    return "fam_" + re.sub(r"[^A-Za-z0-9_]", "_", family)


def to_mermaid(view: View, rankdir: str = "TB") -> str:
    direction = {"TB": "TB", "LR": "LR", "BT": "BT", "RL": "RL"}.get(rankdir, "TB")
    lines = [f"%% {text(view.name)}: drawn by composer from the spec (composer render --format mermaid)",
             f"flowchart {direction}"]
    children, members = view.nesting()

    def emit(key: Optional[str], indent: str) -> None:
        for n in members.get(key, []):
            a, b = ('[/"', '"/]') if n.stage == "pre" else _SHAPES.get(n.role, _SHAPES["block"])
            lines.append(f"{indent}{n.id}{a}{node_label(n)}{b}")
        for c in children.get(key, []):
            title = text(c.name) + (f" ×{c.count}" if c.count > 1 else "")
            if c.pipeline:
                title += f"<br/><i>{text('sub-pipeline ' + c.pipeline)}</i>"
            lines.append(f'{indent}subgraph {c.id}["{title}"]')
            emit(c.key, indent + "  ")
            lines.append(f"{indent}end")

    emit(None, "  ")
    red_links = []
    for i, e in enumerate(view.edges):
        label_parts = []
        if e.ports:
            label_parts.append(text(e.ports))
        if e.type:
            label_parts.append(text(e.type))
        label_parts += [_multiline(t, 40, 2) for t in e.errors[:1]]
        arrow = "-.->" if e.type is None and not e.red else "-->"
        src, dst = view.nodes[e.src].id, view.nodes[e.dst].id
        label = "<br/>".join(label_parts)
        lines.append(f'  {src} {arrow}|"{label}"| {dst}' if label else f"  {src} {arrow} {dst}")
        if e.red:
            red_links.append(str(i))

    # colours: one class per family, then roles and errors (later classes win)
    used: dict[str, list[str]] = {}
    for n in view.nodes.values():
        cls = _class_name(n.family) if n.role in ("block", "group") else f"role_{n.role}"
        used.setdefault(cls, []).append(n.id)
    for cls, ids in used.items():
        if cls.startswith("fam_"):
            fam = next(n.family for n in view.nodes.values() if n.id == ids[0])
            fill, border = S.family_colors(fam)
        else:
            fill, border = S.node_colors(cls[5:], "")
        lines.append(f"  classDef {cls} fill:{fill},stroke:{border},color:#212121")
        lines.append(f"  class {','.join(ids)} {cls}")
    unchecked = [n.id for n in view.nodes.values() if not n.checked and not n.red]
    if unchecked:
        lines.append("  classDef unchecked stroke-dasharray:4 3,color:#757575")
        lines.append(f"  class {','.join(unchecked)} unchecked")
    red = [n.id for n in view.nodes.values() if n.red]
    if red:
        lines.append(f"  classDef failed fill:{S.RED_FILL},stroke:{S.RED},stroke-width:3px,color:{S.RED_TEXT}")
        lines.append(f"  class {','.join(red)} failed")
    if red_links:
        lines.append(f"  linkStyle {','.join(red_links)} stroke:{S.RED},stroke-width:3px,color:{S.RED_TEXT}")
    return "\n".join(lines) + "\n"
