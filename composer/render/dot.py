"""Graphviz DOT source from a `View`, written by our own code with every text escaped.

Node labels are Graphviz HTML-like labels (text escaped as XML: `& < > " '`, newlines as
`<br/>`); every other attribute value is a quoted string (`\\` and `"` escaped, newlines as
`\\n`). Node and edge ids are generated (`n0`, `e0`), never taken from the spec, so no name can
break the DOT syntax or the SVG's DOM ids.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from typing import Iterable, Optional

from ..errors import ComposerError
from ..summary import human
from . import style as S
from .view import VEdge, View, VNode, short_value

MAX_KEY_PARAMS = 6
BR_LEFT = '<br align="left"/>'
WRAP = 46
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")

INSTALL_HINT = ("Graphviz's `dot` program is needed for svg, png and pdf; install it with "
                "`sudo apt-get install graphviz` (Debian/Ubuntu), `brew install graphviz` (macOS) or "
                "`conda install -c conda-forge graphviz`, or choose --format dot, mermaid or html, which work without it")


class GraphvizNotFound(ComposerError):
    """`dot` is not installed."""

    exit_code = 1

    def __init__(self) -> None:
        super().__init__(INSTALL_HINT)


class GraphvizFailed(ComposerError):
    exit_code = 1


# ---- escaping --------------------------------------------------------------------------------


def clean(text: str) -> str:
    """Control characters (other than newline and tab) become spaces; CRLF becomes LF."""
    text = str(text).replace("\r\n", "\n").replace("\r", "\n").replace("\t", " ")
    return _CONTROL.sub(" ", text)


def html_text(text: str) -> str:
    """Text for a Graphviz HTML-like label."""
    t = clean(text)
    t = t.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;").replace('"', "&quot;").replace("'", "&#39;")
    return t.replace("\n", "<br/>")


def quoted(text: str) -> str:
    """A DOT double-quoted string (escString): backslash, quote and newline escaped."""
    t = clean(text).replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
    return f'"{t}"'


# A word: a run of non-spaces in which a backtick-quoted name (which may hold spaces, like
# `in: <block>`) counts as one piece; a lone backtick with no partner is an ordinary character.
_WORD = re.compile(r"(?:`[^`\n]*`|[^\s`]|`(?![^`\n]*`))+")
_BREAK_AFTER = "/\\"


def _split_long(word: str, width: int) -> list[str]:
    """Pieces of an unquoted word longer than `width` (a file path): after a `/` where one is
    near the end of a piece, else hard. A word holding a quoted name is never split."""
    if "`" in word:
        return [word]
    pieces = []
    while len(word) > width:
        cut = max(word.rfind(c, 0, width) for c in _BREAK_AFTER) + 1
        if cut < width // 2:
            cut = width
        pieces.append(word[:cut])
        word = word[cut:]
    return pieces + [word]


def wrap(text: str, width: int = WRAP) -> list[str]:
    """Split text into lines of about `width`, between words only.

    Where a line breaks depends on the text alone, and a backtick-quoted name is never
    split (a line holding a longer one runs over `width`); an unquoted run longer than
    `width`, such as a long path, is split after a `/` (or hard)."""
    out: list[str] = []
    for para in clean(text).split("\n"):
        line = ""
        for word in _WORD.findall(para):
            for i, piece in enumerate(_split_long(word, width)):
                if line and (i > 0 or len(line) + 1 + len(piece) > width):  # the rest of a split word: a new line
                    out.append(line)
                    line = piece
                else:
                    line = f"{line} {piece}" if line else piece
        out.append(line)
    return out


def clip(lines: list[str], width: int, max_lines: int) -> list[str]:
    """At most `max_lines` lines; when some are dropped the last shown ends in `…`, cut
    between words so no quoted name is left open."""
    if len(lines) <= max_lines:
        return lines
    shown = lines[:max_lines]
    words = _WORD.findall(shown[-1])
    while words and len(" ".join(words)) + 2 > width:
        words.pop()
    shown[-1] = " ".join(words + ["…"])
    return shown


def _lines(text: str, width: int = WRAP, max_lines: int = 4, br: str = "<br/>") -> str:
    return br.join(html_text(x) for x in clip(wrap(text, width), width, max_lines))


def _attrs(**kw) -> str:
    parts = []
    for k, v in kw.items():
        if v is None:
            continue
        if isinstance(v, str) and v.startswith("<") and v.endswith(">"):
            parts.append(f"{k}={v}")  # an HTML-like label, already escaped
        else:
            parts.append(f"{k}={quoted(str(v))}")
    return "[" + ", ".join(parts) + "]"


# ---- labels ----------------------------------------------------------------------------------


def figures(n: VNode) -> str:
    """`params 18.5k · MACs 151.0M` (what is known)."""
    parts = []
    if n.n_params:
        parts.append(f"params {human(n.n_params)}")
    if n.macs:
        parts.append(f"MACs {human(n.macs)}")
    return " · ".join(parts)


def node_label(n: VNode) -> str:
    rows: list[str] = []
    title = html_text(n.name)
    if n.count > 1:
        title += f" ×{n.count}"
    rows.append(f'<tr><td><b><font point-size="12">{title}</font></b></td></tr>')
    if n.role == "subpipeline":
        kind = f"{n.type} · {n.blocks} block{'s' if n.blocks != 1 else ''}"
    elif n.role in ("input", "output"):
        kind = f"{n.role}: {n.type}"
    elif n.role == "port":
        kind = f"in: {n.out_ports.get('out') or n.type}"
    else:
        kind = n.type + (" · frozen" if n.frozen else "") + (" · pre-processing" if n.stage == "pre" else "")
    rows.append(f'<tr><td><font point-size="10" color="{S.GREY_TEXT}">{_lines(kind)}</font></td></tr>')
    if n.key_params:
        items = list(n.key_params.items())
        shown = [f"{k}={short_value(v)}" for k, v in items[:MAX_KEY_PARAMS]]
        if len(items) > MAX_KEY_PARAMS:
            shown.append(f"+{len(items) - MAX_KEY_PARAMS} more")
        rows.append(f'<tr><td><font point-size="10">{"<br/>".join(html_text(s) for s in shown)}</font></td></tr>')
    if n.description and n.role not in ("port",):
        rows.append(f'<tr><td><font point-size="9" color="{S.GREY_TEXT}"><i>{_lines(n.description, max_lines=3)}'
                    f'</i></font></td></tr>')
    fig = figures(n) if n.role in ("block", "group", "subpipeline") else ""
    if fig:
        rows.append(f'<tr><td><font point-size="10">{html_text(fig)}</font></td></tr>')
    if not n.checked and not n.red:
        rows.append(f'<tr><td><font point-size="9" color="{S.GREY_TEXT}">not checked (upstream error)</font></td></tr>')
    for text in n.errors[:3]:
        rows.append(f'<tr><td><font point-size="10" color="{S.RED_TEXT}">{_lines(text)}</font></td></tr>')
    if len(n.errors) > 3:
        rows.append(f'<tr><td><font point-size="10" color="{S.RED_TEXT}">+{len(n.errors) - 3} more errors</font></td></tr>')
    if n.failed and not n.errors:
        rows.append(f'<tr><td><font point-size="10" color="{S.RED_TEXT}">error (see the edge into it)</font></td></tr>')
    for text in n.warnings[:2]:
        rows.append(f'<tr><td><font point-size="9" color="#8d6e00">{_lines("warning " + text)}</font></td></tr>')
    return '<<table border="0" cellborder="0" cellspacing="0" cellpadding="1">' + "".join(rows) + "</table>>"


def edge_label(e: VEdge) -> Optional[str]:
    rows = []
    if e.ports:
        rows.append(f'<font point-size="9"><b>{html_text(e.ports)}</b></font>')
    if e.type:
        rows.append(f'<font point-size="9">{_lines(e.type, 40, 3)}</font>')
    for text in e.errors[:2]:
        rows.append(f'<font point-size="9" color="{S.RED_TEXT}">{_lines(text, 40)}</font>')
    if not rows:
        return None
    return "<" + "<br/>".join(rows) + ">"


def tooltip(n: VNode) -> str:
    parts = [f"{n.name}" + (f" ×{n.count}" if n.count > 1 else "") + f" ({n.type})"]
    if n.description:
        parts.append(n.description)
    for p, t in n.in_ports.items():
        parts.append(f"in {p}: {t}")
    for p, t in n.out_ports.items():
        parts.append(f"out {p}: {t}")
    if figures(n):
        parts.append(figures(n))
    parts += n.errors + [f"warning {w}" for w in n.warnings]
    return "\n".join(parts)


def _classes(n: VNode) -> str:
    cls = ["cnode", f"role-{n.role}", f"fam-{re.sub(r'[^A-Za-z0-9_-]', '_', n.family)}", f"stage-{n.stage}"]
    if n.red:
        cls.append("failed")
    if n.warnings:
        cls.append("warned")
    return " ".join(cls)


def node_stmt(n: VNode) -> str:
    fill, border = S.node_colors(n.role, n.family)
    shape, style, extra = "box", "rounded,filled", {}
    if n.role == "input":
        shape, style = "invhouse", "filled"
        extra["penwidth"] = "1.6"
    elif n.role == "output":
        shape, style = "house", "filled"
        extra["penwidth"] = "1.6"
    elif n.role == "port":
        shape, style = "ellipse", "filled"
    elif n.role == "subpipeline":
        shape, style = "box3d", "filled"
    elif n.stage == "pre":   # a pre-processing stage: drawn as a data transform, outside the tensor core
        shape, style = "parallelogram", "filled"
    if n.count > 1:
        extra["peripheries"] = "2"
    if not n.checked:
        style += ",dashed"
    if n.red:
        fill, border = S.RED_FILL, S.RED
        extra["penwidth"] = "2.5"
    elif n.warnings:
        border = S.WARN
        extra["penwidth"] = "2"
    return f"  {n.id} " + _attrs(id=n.id, label=node_label(n), shape=shape, style=style, fillcolor=fill,
                                  color=border, tooltip=tooltip(n), **{"class": _classes(n)}, **extra) + ";"


def edge_stmt(e: VEdge, ids: dict[str, str]) -> str:
    kw: dict = {"id": e.id, "label": edge_label(e), "tooltip": e.tooltip + "".join("\n" + t for t in e.errors),
                "class": "cedge" + (" failed" if e.red else "")}
    if e.red:
        kw.update(color=S.RED, fontcolor=S.RED_TEXT, penwidth="2.2")
    elif e.type is None:
        kw.update(style="dashed", color="#9e9e9e")
    return f"  {ids[e.src]} -> {ids[e.dst]} " + _attrs(**kw) + ";"


def legend(view: View) -> str:
    cells = []
    for fam in view.families:
        fill, border = S.family_colors(fam)
        cells.append(f'<td bgcolor="{fill}" color="{border}" border="1">{html_text(fam)}</td>')
    roles = {n.role for n in view.nodes.values()}
    cells.append(f'<td bgcolor="{S.INPUT[0]}" border="1">input / output</td>')
    if "group" in roles:
        cells.append('<td border="1">×N folded repeat</td>')
    if "subpipeline" in roles:
        cells.append(f'<td bgcolor="{S.SUBPIPELINE[0]}" border="1">collapsed sub-pipeline</td>')
    if any(n.red for n in view.nodes.values()) or any(e.red for e in view.edges) or view.errors:
        cells.append(f'<td bgcolor="{S.RED_FILL}" color="{S.RED}" border="1"><font color="{S.RED_TEXT}">error</font></td>')
    return ('<table border="0" cellspacing="3" cellpadding="2"><tr>' + "".join(
        c.replace('border="1">', 'border="1"><font point-size="10">', 1).replace("</td>", "</font></td>")
        for c in cells) + "</tr></table>")


def graph_label(view: View) -> str:
    rows = [f'<tr><td align="left"><b><font point-size="16">{html_text(view.name)}</font></b></td></tr>']
    if view.description:
        rows.append(f'<tr><td align="left" balign="left"><font color="{S.GREY_TEXT}">{_lines(view.description, 90, 3, BR_LEFT)}</font></td></tr>')
    if view.n_errors:
        rows.append(f'<tr><td align="left"><font color="{S.RED_TEXT}"><b>{view.n_errors} error'
                    f'{"s" if view.n_errors != 1 else ""}: drawn in red</b></font></td></tr>')
    for where, text in view.errors[:8]:
        # the location on a line of its own, so the message wraps the same wherever the file lives
        shown = (wrap(where + ":", 90) if where else []) + clip(wrap(text, 90), 90, 3)
        rows.append(f'<tr><td align="left" balign="left"><font color="{S.RED_TEXT}">'
                    f'{BR_LEFT.join(html_text(x) for x in shown)}</font></td></tr>')
    if len(view.errors) > 8:
        rows.append(f'<tr><td align="left"><font color="{S.RED_TEXT}">+{len(view.errors) - 8} more</font></td></tr>')
    if view.macs_at:
        at = ", ".join(f"{k}={v}" for k, v in view.macs_at.items())
        rows.append(f'<tr><td align="left"><font point-size="10" color="{S.GREY_TEXT}">MACs at {html_text(at)}'
                    f'</font></td></tr>')
    rows.append(f'<tr><td align="left">{legend(view)}</td></tr>')
    return '<<table border="0" cellspacing="0" cellpadding="2">' + "".join(rows) + "</table>>"


# ---- the whole graph ----------------------------------------------------------------------------


def to_dot(view: View, rankdir: str = "TB") -> str:
    """DOT source of the view: clusters nested as the sub-pipelines are."""
    ids = {k: n.id for k, n in view.nodes.items()}
    lines = [
        "digraph composer {",
        "  " + " ".join(f"{k}={quoted(v)};" for k, v in dict(
            rankdir=rankdir, fontname=S.FONT, labelloc="t", labeljust="l", nodesep="0.3", ranksep="0.45",
            id="graph", tooltip=view.name, bgcolor="white", newrank="true").items())
        + f" label={graph_label(view)};",
        f"  node [fontname={quoted(S.FONT)}, fontsize=10, margin=\"0.12,0.06\"];",
        f"  edge [fontname={quoted(S.FONT)}, fontsize=9, color={quoted(S.EDGE)}, arrowsize=0.7];",
    ]
    children, members = view.nesting()

    def emit(key: Optional[str], indent: str) -> None:
        for n in members.get(key, []):
            lines.append(indent[2:] + node_stmt(n))
        for c in children.get(key, []):
            lines.append(f"{indent}subgraph cluster_{c.id} {{")
            title = html_text(c.name) + (f" ×{c.count}" if c.count > 1 else "")
            sub = html_text(f"sub-pipeline {c.pipeline}") if c.pipeline else ""
            lbl = f'<<b>{title}</b><br/><font point-size="9" color="{S.GREY_TEXT}">{sub}</font>>'
            lines.append(f"{indent}  id={quoted(c.id)}; label={lbl}; style={quoted('rounded,dashed')}; "
                         f"color={quoted(S.CLUSTER)}; fontsize=11; labeljust=l; tooltip={quoted(c.description or c.name)};"
                         + (" peripheries=1; penwidth=2;" if c.count > 1 else ""))
            emit(c.key, indent + "  ")
            lines.append(f"{indent}}}")

    emit(None, "  ")
    for e in view.edges:
        lines.append(edge_stmt(e, ids))
    lines.append("}")
    return "\n".join(lines) + "\n"


# ---- running dot -----------------------------------------------------------------------------


def dot_path() -> Optional[str]:
    return shutil.which("dot")


def run_dot(source: str, fmt: str, *, timeout: float = 300.0, extra: Iterable[str] = ()) -> bytes:
    """Lay out and draw DOT source with Graphviz; raises GraphvizNotFound when `dot` is missing."""
    exe = dot_path()
    if exe is None:
        raise GraphvizNotFound()
    args = [exe, f"-T{fmt}", *extra]
    if fmt == "png":
        args.append("-Gdpi=144")
    try:
        proc = subprocess.run(args, input=source.encode("utf-8"), capture_output=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        raise GraphvizFailed(f"Graphviz took longer than {timeout:.0f} s to lay out the graph; "
                             "try --depth 0 to collapse sub-pipelines") from None
    except OSError as exc:
        raise GraphvizFailed(f"could not run Graphviz ({exe}): {exc}") from None
    if proc.returncode != 0 or not proc.stdout:
        msg = proc.stderr.decode("utf-8", "replace").strip()
        raise GraphvizFailed(f"Graphviz failed to draw the graph (exit {proc.returncode}): {msg[:2000]}")
    return proc.stdout
