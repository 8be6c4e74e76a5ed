"""Parts: pieces of a pipeline that export and run on their own.

An encoder-decoder generates by running its encoder once per prompt and its decoder once per
token; exporting the whole pipeline would run both at every step. The spec's `parts:` names the
pieces:

    parts:
      encoder: {outputs: [encoder_states]}
      decoder: {given: {encoder_states: encoder, mask: tok.mask}, outputs: [logits, present]}

A part is the sub-pipeline that computes its `outputs`, with every `given` value turned into an
input of its own of the value's inferred type (so `encoder_states` [B, S, 512] is an input of the
decoder part instead of the encoder's output). Everything the outputs do not need is left out.
The part keeps the pipeline's block names, so its state dict is a subset of the pipeline's and
`part_model` fills it from a built pipeline.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Union

from .compile import CompiledPipeline
from .dims import format_dim
from .errors import ComposerError
from .graph import analyze
from .pipeline import Pipeline, _checked
from .resolve import Input, Ref
from .spec import InputDecl


def _same(a: Ref, b: Ref) -> bool:
    return a.node == b.node and a.field == b.field and (a.port or "out") == (b.port or "out")


def part_pipeline(pipe: Pipeline, name: str) -> Pipeline:
    """The sub-pipeline of part `name` of `pipe` (named `<pipeline>_<part>`)."""
    r, graph = pipe.resolved, pipe.graph
    if name not in r.parts:
        known = ", ".join(r.parts) or "none"
        raise ComposerError(f"pipeline {r.name} has no part `{name}` (its parts: {known})")
    part = r.parts[name]
    given = {}
    for gname, ref in part.given.items():
        t = graph.output_type(ref)
        decl = InputDecl(kind=t.kind, shape=[d if isinstance(d, int) else format_dim(d) for d in t.shape],
                         dtype=t.dtype)
        given[gname] = (ref, Input(gname, decl, t, ref.loc))

    def sub(ref: Ref) -> Ref:
        for gname, (gref, _) in given.items():
            if _same(ref, gref):
                return Ref(gname, None, ref.loc, ref.path)
        return ref

    nodes = {}
    for nname, node in r.nodes.items():
        bindings = {p: [sub(x) for x in b] if isinstance(b, list) else sub(b) for p, b in node.bindings.items()}
        nodes[nname] = replace(node, bindings=bindings)
    outputs = {o: sub(r.outputs[o]) for o in part.outputs}
    needed: set[str] = set()
    todo = [ref.node for ref in outputs.values()]
    while todo:
        n = todo.pop()
        if n in needed:
            continue
        needed.add(n)
        if n in nodes:
            for b in nodes[n].bindings.values():
                todo += [x.node for x in (b if isinstance(b, list) else [b])]
    inputs = {n: i for n, i in r.inputs.items() if n in needed}
    inputs.update({g: inp for g, (_, inp) in given.items() if g in needed})
    sub_resolved = replace(r, name=f"{r.name}_{name}", inputs=inputs,
                           nodes={n: node for n, node in nodes.items() if n in needed}, outputs=outputs,
                           parts={}, train=None, weights=None, diagnostics=[])
    return _checked(analyze(sub_resolved))


def part_model(model: CompiledPipeline, name: str) -> CompiledPipeline:
    """Part `name` of a built pipeline, with the pipeline's weights and buffers (shared, not copied):
    it is built on the meta device and every tensor is then the pipeline's own, so nothing is
    initialised only to be thrown away."""
    piece = part_pipeline(model.pipeline, name).build(device="meta")
    own = {**dict(model.named_parameters()), **dict(model.named_buffers())}
    missing = [k for k in (*dict(piece.named_parameters()), *dict(piece.named_buffers())) if k not in own]
    if missing:
        raise ComposerError(f"part `{name}` has tensors the pipeline lacks: {', '.join(missing[:5])}")
    for mod_name, module in piece.named_modules():
        prefix = f"{mod_name}." if mod_name else ""
        for pname, _ in list(module.named_parameters(recurse=False)):
            module._parameters[pname] = own[prefix + pname]
        for bname, _ in list(module.named_buffers(recurse=False)):
            module._buffers[bname] = own[prefix + bname]
    return piece.train(model.training)


def parts_of(pipe_or_model: Union[Pipeline, CompiledPipeline]) -> list[str]:
    """The names of a pipeline's parts, in spec order."""
    pipe = pipe_or_model.pipeline if isinstance(pipe_or_model, CompiledPipeline) else pipe_or_model
    return list(pipe.resolved.parts)
