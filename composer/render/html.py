"""One self-contained interactive HTML page: the diagram with pan and zoom, a search box and a
side panel with the clicked block's params, ports and types, parameter count and MACs.

Everything is inline (SVG, CSS, JS, data); a Content-Security-Policy forbids any network
access. With Graphviz installed the page carries the Graphviz drawing; without it, composer's
own layered layout (`layout.py`) and a note saying how to get the full drawing.

Spec text reaches the page only as escaped SVG text, escaped HTML, or JSON inside a
`<script type="application/json">` with `<`, `>` and `&` written as \\u escapes; the page's JS
inserts it with `textContent`, never as markup.
"""

from __future__ import annotations

import html as _html
import json
import re

from . import style as S
from .dot import dot_path, run_dot, to_dot
from .layout import layout_note, to_svg
from .view import View

_PROLOG = re.compile(r"^.*?(?=<svg\b)", re.S)


def _json_for_script(obj) -> str:
    s = json.dumps(obj, ensure_ascii=False, separators=(",", ":"), default=str)
    return (s.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")
            .replace("\u2028", "\\u2028").replace("\u2029", "\\u2029"))


def page_data(view: View) -> dict:
    nodes = {}
    for n in view.nodes.values():
        nodes[n.id] = {
            "name": n.name, "key": n.key, "role": n.role, "type": n.type, "family": n.family,
            "cluster": n.cluster, "count": n.count, "blocks": n.blocks, "params": n.all_params,
            "set": list(n.key_params), "n_params": n.n_params, "macs": n.macs, "inputs": n.in_ports,
            "outputs": n.out_ports, "errors": n.errors, "warnings": n.warnings, "description": n.description,
            "location": n.location, "members": n.members[:50], "n_members": len(n.members),
            "checked": n.checked, "frozen": n.frozen,
        }
    edges = {e.id: {"src": view.nodes[e.src].id, "dst": view.nodes[e.dst].id, "ports": e.ports, "type": e.type,
                    "errors": e.errors, "tooltip": e.tooltip} for e in view.edges}
    return {"name": view.name, "nodes": nodes, "edges": edges, "errors": view.error_lines(), "macs_at": view.macs_at}


def _svg(view: View, rankdir: str) -> tuple[str, bool]:
    """The diagram's SVG markup and whether it came from Graphviz."""
    if dot_path() is not None:
        svg = run_dot(to_dot(view, rankdir), "svg").decode("utf-8")
        svg = _PROLOG.sub("", svg, count=1)
        svg = re.sub(r"<!--.*?-->", "", svg, flags=re.S)
        return svg, True
    return to_svg(view, rankdir), False


def _legend(view: View) -> str:
    items = []
    for fam in view.families:
        fill, border = S.family_colors(fam)
        items.append(f'<span class="sw" style="background:{fill};border-color:{border}"></span>{_html.escape(fam)}')
    items.append(f'<span class="sw" style="background:{S.INPUT[0]};border-color:{S.INPUT[1]}"></span>input / output')
    if any(n.red for n in view.nodes.values()) or view.errors:
        items.append(f'<span class="sw" style="background:{S.RED_FILL};border-color:{S.RED}"></span>error')
    return "".join(f"<span class=\"li\">{i}</span>" for i in items)


def to_html(view: View, rankdir: str = "TB") -> str:
    svg, from_graphviz = _svg(view, rankdir)
    note = layout_note(not from_graphviz)
    esc = _html.escape
    n_blocks = sum(1 for n in view.nodes.values() if n.role in ("block", "group", "subpipeline"))
    status = (f'<span class="bad">{view.n_errors} error{"s" if view.n_errors != 1 else ""}</span>'
              if view.n_errors else '<span class="ok">valid</span>')
    errors_html = "".join(f"<li>{esc(t)}</li>" for t in view.error_lines())
    return _TEMPLATE.format(
        title=esc(view.name),
        description=esc(view.description),
        status=status,
        n_blocks=n_blocks,
        legend=_legend(view),
        note=f'<div class="note">{esc(note)}</div>' if note else "",
        errors=f'<ul class="gerrors">{errors_html}</ul>' if errors_html else "",
        svg=svg,
        data=_json_for_script(page_data(view)),
        css=_CSS,
        js=_JS,
        layout="graphviz" if from_graphviz else "simple",
        rankdir=esc(rankdir),
    )


_TEMPLATE = """<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta http-equiv="Content-Security-Policy" content="default-src 'none'; style-src 'unsafe-inline'; script-src 'unsafe-inline'; img-src data:">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="generator" content="composer render">
<title>{title} · composer</title>
<style>{css}</style>
</head>
<body data-layout="{layout}" data-rankdir="{rankdir}">
<header>
  <div class="head">
    <h1>{title}</h1> {status} <span class="muted">{n_blocks} nodes</span>
    <div class="muted desc">{description}</div>
  </div>
  <div class="tools">
    <input id="search" type="search" placeholder="Search blocks by name or type  ( / )" autocomplete="off" spellcheck="false">
    <span id="hits" class="muted"></span>
    <button id="zin" title="Zoom in">+</button><button id="zout" title="Zoom out">−</button><button id="fit" title="Fit to window">fit</button>
  </div>
  <div class="legend">{legend}</div>
</header>
{note}{errors}
<main>
  <div id="canvas" tabindex="0">{svg}</div>
  <aside id="panel"><div id="panel-body"><p class="muted">Click a block to see its params, ports and types.
  Drag to pan, scroll to zoom.</p></div></aside>
</main>
<script type="application/json" id="composer-data">{data}</script>
<script>{js}</script>
</body>
</html>
"""

_CSS = """
*{box-sizing:border-box}
html,body{margin:0;height:100%;font:13px/1.4 Helvetica,Arial,sans-serif;color:#212121;background:#fafafa}
body{display:flex;flex-direction:column}
header{display:flex;flex-wrap:wrap;align-items:center;gap:6px 18px;padding:8px 14px;background:#fff;border-bottom:1px solid #ddd}
h1{display:inline;font-size:18px;margin:0 6px 0 0}
.head{min-width:220px}
.desc{max-width:60ch}
.muted{color:#757575}
.ok{color:#2e7d32;font-weight:bold}
.bad{color:#c62828;font-weight:bold}
.tools{display:flex;align-items:center;gap:6px}
#search{width:300px;padding:5px 8px;border:1px solid #bbb;border-radius:4px;font:inherit}
button{padding:4px 9px;border:1px solid #bbb;background:#fff;border-radius:4px;cursor:pointer;font:inherit}
button:hover{background:#f0f0f0}
.legend{display:flex;flex-wrap:wrap;gap:10px;font-size:12px}
.li{display:inline-flex;align-items:center;gap:4px}
.sw{display:inline-block;width:14px;height:12px;border:1px solid;border-radius:3px}
.note{padding:6px 14px;background:#fff8e1;border-bottom:1px solid #ffe082;font-size:12px}
.gerrors{margin:0;padding:6px 14px 6px 32px;background:#fdecea;color:#b71c1c;border-bottom:1px solid #f5c6cb;font-size:12px}
main{flex:1;display:flex;min-height:0}
#canvas{flex:1;overflow:hidden;cursor:grab;background:#fff;outline:none;position:relative}
#canvas.dragging{cursor:grabbing}
#canvas svg{width:100%;height:100%;display:block;user-select:none}
#panel{width:360px;max-width:45vw;overflow:auto;border-left:1px solid #ddd;background:#fff;padding:12px 14px}
#panel h2{font-size:16px;margin:0 0 2px;word-break:break-all}
#panel h3{font-size:12px;text-transform:uppercase;letter-spacing:.04em;color:#607d8b;margin:14px 0 4px}
#panel table{border-collapse:collapse;width:100%}
#panel td{border-top:1px solid #eee;padding:3px 4px;vertical-align:top;word-break:break-word}
#panel td:first-child{color:#455a64;white-space:nowrap;width:1%}
#panel td.set{font-weight:bold}
#panel .err{color:#b71c1c;background:#fdecea;border-left:3px solid #d32f2f;padding:4px 6px;margin:4px 0}
#panel .warn{color:#6d4c00;background:#fff8e1;border-left:3px solid #f9a825;padding:4px 6px;margin:4px 0}
#panel code{font:12px/1.3 Menlo,Consolas,monospace}
.figs{display:flex;gap:16px;margin-top:6px}
.figs div b{display:block;font-size:16px}
g.node,g.edge{cursor:pointer}
g.node.selected :is(path,polygon,ellipse,rect):first-of-type{stroke:#1565c0;stroke-width:3.5px}
g.node.hit :is(path,polygon,ellipse,rect):first-of-type{stroke:#ef6c00;stroke-width:4px}
svg.searching g.node:not(.hit),svg.searching g.edge{opacity:.25}
"""

_JS = r"""
(function () {
  "use strict";
  var data = JSON.parse(document.getElementById("composer-data").textContent);
  var canvas = document.getElementById("canvas");
  var svg = canvas.querySelector("svg");
  var panel = document.getElementById("panel-body");
  var search = document.getElementById("search");
  var hits = document.getElementById("hits");
  svg.removeAttribute("width");
  svg.removeAttribute("height");
  var v0 = svg.viewBox.baseVal;
  var home = [v0.x, v0.y, v0.width, v0.height];

  function vb() { var v = svg.viewBox.baseVal; return [v.x, v.y, v.width, v.height]; }
  function setVB(a) { svg.setAttribute("viewBox", a.map(function (x) { return x.toFixed(2); }).join(" ")); }
  function scale() { var v = vb(); return Math.min(canvas.clientWidth / v[2], canvas.clientHeight / v[3]); }
  function toSvg(cx, cy) {
    var p = svg.createSVGPoint(); p.x = cx; p.y = cy;
    return p.matrixTransform(svg.getScreenCTM().inverse());
  }
  function zoom(f, cx, cy) {
    var r = canvas.getBoundingClientRect();
    if (cx === undefined) { cx = r.left + r.width / 2; cy = r.top + r.height / 2; }
    var p = toSvg(cx, cy), v = vb();
    setVB([p.x - (p.x - v[0]) * f, p.y - (p.y - v[1]) * f, v[2] * f, v[3] * f]);
  }
  function centerOn(el) {
    var r = el.getBoundingClientRect(), p = toSvg(r.left + r.width / 2, r.top + r.height / 2), v = vb();
    setVB([p.x - v[2] / 2, p.y - v[3] / 2, v[2], v[3]]);
  }
  canvas.addEventListener("wheel", function (e) {
    e.preventDefault();
    zoom(e.deltaY > 0 ? 1.15 : 1 / 1.15, e.clientX, e.clientY);
  }, { passive: false });
  var drag = null, moved = false;
  canvas.addEventListener("mousedown", function (e) {
    if (e.button !== 0) return;
    drag = { x: e.clientX, y: e.clientY, v: vb(), s: scale() }; moved = false;
  });
  window.addEventListener("mousemove", function (e) {
    if (!drag) return;
    var dx = e.clientX - drag.x, dy = e.clientY - drag.y;
    if (Math.abs(dx) + Math.abs(dy) > 3) { moved = true; canvas.classList.add("dragging"); }
    if (moved) setVB([drag.v[0] - dx / drag.s, drag.v[1] - dy / drag.s, drag.v[2], drag.v[3]]);
  });
  window.addEventListener("mouseup", function () { drag = null; canvas.classList.remove("dragging"); });
  document.getElementById("zin").onclick = function () { zoom(1 / 1.3); };
  document.getElementById("zout").onclick = function () { zoom(1.3); };
  document.getElementById("fit").onclick = function () { setVB(home); };
  // start readable: a large graph opens at about 1:1 at its start (top, or left for LR), not shrunk to fit
  (function () {
    var cw = canvas.clientWidth, ch = canvas.clientHeight;
    if (!cw || !ch || Math.min(cw / home[2], ch / home[3]) >= 0.8) return;
    var w = cw, h = ch, lr = document.body.getAttribute("data-rankdir") === "LR";
    setVB(lr ? [home[0], home[1] + home[3] / 2 - h / 2, w, h] : [home[0] + home[2] / 2 - w / 2, home[1], w, h]);
  })();

  function el(tag, text, cls) {
    var e = document.createElement(tag);
    if (text !== undefined && text !== null) e.textContent = String(text);
    if (cls) e.className = cls;
    return e;
  }
  function human(n) {
    if (n === null || n === undefined) return "–";
    var u = [["G", 1e9], ["M", 1e6], ["k", 1e3]];
    for (var i = 0; i < u.length; i++) if (Math.abs(n) >= u[i][1]) return (n / u[i][1]).toFixed(2) + u[i][0];
    return String(n);
  }
  function fmt(v) { return typeof v === "string" ? v : JSON.stringify(v); }
  function table(obj, setKeys) {
    var t = el("table");
    Object.keys(obj).forEach(function (k) {
      var tr = el("tr"), a = el("td", k), b = el("td");
      b.appendChild(el("code", fmt(obj[k])));
      if (setKeys && setKeys.indexOf(k) >= 0) { a.className = "set"; b.className = "set"; }
      tr.appendChild(a); tr.appendChild(b); t.appendChild(tr);
    });
    return t;
  }
  var selected = null;
  function show(id) {
    var d = data.nodes[id]; if (!d) return;
    if (selected) selected.classList.remove("selected");
    selected = document.getElementById(id);
    if (selected) selected.classList.add("selected");
    panel.textContent = "";
    panel.appendChild(el("h2", d.name + (d.count > 1 ? " \u00d7" + d.count : "")));
    var sub = d.role === "block" || d.role === "group" ? d.type + " \u00b7 " + d.family : d.role + " \u00b7 " + d.type;
    panel.appendChild(el("div", sub + (d.frozen ? " \u00b7 frozen" : ""), "muted"));
    if (d.cluster) panel.appendChild(el("div", "in sub-pipeline " + d.cluster, "muted"));
    d.errors.forEach(function (t) { panel.appendChild(el("div", t, "err")); });
    d.warnings.forEach(function (t) { panel.appendChild(el("div", "warning " + t, "warn")); });
    if (!d.checked) panel.appendChild(el("div", "not type-checked: an input comes from a block with an error", "warn"));
    if (d.description) panel.appendChild(el("p", d.description));
    if (d.role !== "input" && d.role !== "output" && d.role !== "port") {
      var figs = el("div", null, "figs"), a = el("div"), b = el("div");
      a.appendChild(el("b", d.n_params === null ? "–" : d.n_params.toLocaleString("en-US"))); a.appendChild(el("span", "parameters", "muted"));
      b.appendChild(el("b", human(d.macs))); b.appendChild(el("span", "MACs", "muted"));
      figs.appendChild(a); figs.appendChild(b); panel.appendChild(figs);
    }
    if (Object.keys(d.params).length) {
      panel.appendChild(el("h3", "Params"));
      var pt = table(d.params, d.set); pt.id = "panel-params"; panel.appendChild(pt);
    }
    if (Object.keys(d.inputs).length) { panel.appendChild(el("h3", "Input ports")); panel.appendChild(table(d.inputs)); }
    if (Object.keys(d.outputs).length) { panel.appendChild(el("h3", "Output ports")); panel.appendChild(table(d.outputs)); }
    if (d.n_members > 1) {
      panel.appendChild(el("h3", d.role === "subpipeline" ? "Nodes inside" : "Copies"));
      panel.appendChild(el("div", d.members.join(", ") + (d.n_members > d.members.length ? ", \u2026" : ""), "muted"));
    }
    if (d.location) { panel.appendChild(el("h3", "Written at")); panel.appendChild(el("code", d.location)); }
  }
  function showEdge(id) {
    var d = data.edges[id]; if (!d) return;
    if (selected) selected.classList.remove("selected");
    selected = null;
    panel.textContent = "";
    panel.appendChild(el("h2", data.nodes[d.src].name + " \u2192 " + data.nodes[d.dst].name));
    panel.appendChild(el("div", "connection", "muted"));
    d.errors.forEach(function (t) { panel.appendChild(el("div", t, "err")); });
    panel.appendChild(el("h3", "Type"));
    panel.appendChild(el("code", d.type || "unknown (an error further up)"));
    panel.appendChild(el("h3", "Ports"));
    panel.appendChild(el("div", d.tooltip));
  }
  canvas.addEventListener("click", function (e) {
    if (moved) { moved = false; return; }
    var g = e.target.closest ? e.target.closest("g.node") : null;
    if (g && data.nodes[g.id]) { show(g.id); return; }
    var ed = e.target.closest ? e.target.closest("g.edge") : null;
    if (ed && data.edges[ed.id]) showEdge(ed.id);
  });

  var nodeEls = Array.prototype.slice.call(svg.querySelectorAll("g.node"));
  function runSearch(jump) {
    var q = search.value.trim().toLowerCase(), first = null, n = 0;
    nodeEls.forEach(function (g) {
      var d = data.nodes[g.id];
      var hit = !!(q && d && (d.name.toLowerCase().indexOf(q) >= 0 || d.type.toLowerCase().indexOf(q) >= 0 ||
                              d.key.toLowerCase().indexOf(q) >= 0));
      g.classList.toggle("hit", hit);
      if (hit) { n++; if (!first) first = g; }
    });
    svg.classList.toggle("searching", !!q);
    hits.textContent = q ? n + " match" + (n === 1 ? "" : "es") : "";
    if (jump && first) { centerOn(first); show(first.id); }
  }
  search.addEventListener("input", function () { runSearch(false); });
  search.addEventListener("keydown", function (e) {
    if (e.key === "Enter") runSearch(true);
    if (e.key === "Escape") { search.value = ""; runSearch(false); }
  });
  document.addEventListener("keydown", function (e) {
    if (e.key === "/" && document.activeElement !== search) { e.preventDefault(); search.focus(); }
  });
})();
"""
