"""What training a pipeline needs from its data: the plan derived from the typed graph and the
checked `train:` section, before any example is read.

`plan(pipe)` says, for each spec input, which data field fills it (and its `InputSpec`), and
for each output that has a loss, which data field it is compared with and what that target
must look like per example (shape, dtype, number of classes). The data readers check their
examples against these needs before the first step; the losses and metrics are built from
the same plan, so a loss that does not fit its output's type is a located spec error here.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Mapping, Optional

from .. import errors as E
from ..dims import Dim, format_dim
from ..errors import Diagnostics, SpecError
from ..graph_data import GRAPH_COUNT
from ..inputs import InputSpec, graph_group, specs_from_pipeline
from ..stages import PreStage, pre_nodes
from .config import BlockLosses, CrossEntropy, TrainSection

CLASS_KINDS = ("logits", "vector", "sequence", "nodes")    # float scores, classes last
DETECTION_KINDS = ("boxes", "labels")


@dataclass(frozen=True)
class InputNeed:
    """A spec input and the data field that fills it (`raw`: text for a pre-processing block;
    a `graph` input: `graph` holds the InputSpec of each of its fields, the core inputs
    `graph_x`, `graph_edge_index`, ... by field)."""

    name: str
    field: str
    spec: Optional[InputSpec]        # None for a raw (text) input, which the pre-stage turns into core inputs
    kind: str
    raw: bool = False
    columns: Optional[tuple[str, ...]] = None   # table data: the columns that fill it, in order
    graph: Optional[Mapping[str, InputSpec]] = field(default=None, hash=False, compare=False)


@dataclass(frozen=True)
class TargetNeed:
    """An output's target: its data field, and what one example's target must be.

    `role`: `class` (integer class ids in [0, num_classes), `ignore_index` allowed), `binary`
    (floats in [0, 1] of the output's shape), `value` (floats of the output's shape), or
    `detection` (per image: `boxes` [N, 4] x1 y1 x2 y2 in input pixels, `labels` [N] in
    [1, num_classes)). `shape` is per example; None entries are symbolic (they follow the
    input, a sequence's T). `class_ids` (detection): `category`, labels are the data's category
    ids (R-CNN heads: `num_classes` counts the background 0); `index`, labels are 0..num_classes-1,
    the data's categories in id order (a YOLO head).

    With a graph input, `level` says what one example of the target is: `node` (an output whose
    first dim is the graph's node count N, e.g. `nodes [N, C]`: a target per node, `shape` per
    node, concatenated over the graphs of a batch) or `graph` (first dim G after `graph_pool`, or
    1: one target per graph); `graph` names the graph input."""

    output: str
    field: str
    role: str
    shape: Optional[tuple[Optional[int], ...]]
    dtype: str
    num_classes: Optional[int] = None
    ignore_index: Optional[int] = None
    class_ids: str = "category"
    level: Optional[str] = None
    graph: Optional[str] = None


@dataclass
class Plan:
    section: TrainSection
    inputs: dict[str, InputNeed]
    targets: dict[str, TargetNeed]
    losses: dict[str, object]                   # output -> loss config (composer.train.config)
    metrics: dict[str, list[str]]
    stage: Optional[PreStage] = None
    block_losses: list[str] = field(default_factory=list)   # nodes whose blocks define their own losses

    @property
    def spec(self):
        return self.section.spec

    @property
    def objective_outputs(self) -> list[str]:
        """Outputs with a loss of their own (not the blocks' losses): what `val/loss` sums."""
        return [o for o, c in self.losses.items() if not isinstance(c, BlockLosses)]



def _static(shape) -> Optional[tuple[Optional[int], ...]]:
    if shape is None:
        return None
    return tuple(d if isinstance(d, int) and not isinstance(d, bool) else None for d in shape)


def plan(pipe) -> Plan:
    """The training plan of a pipeline with a `train:` section; SpecError (located) when a loss,
    metric or target does not fit the output it names."""
    section: Optional[TrainSection] = pipe.resolved.train
    if section is None:
        raise SpecError([E.Diagnostic(E.MISSING_PARAM, "the spec has no `train:` section", loc=E.Location(
            pipe.file, 1, 1), path="train", hint="add `train: {data: {format: ..., train: ...}, epochs: ...}`; see "
                                                   "docs/training.md")])
    spec, diags, graph = section.spec, Diagnostics(), pipe.graph
    section.graph = graph
    renamed = {inp: fld for fld, inp in spec.data.inputs.items()}
    specs = specs_from_pipeline(pipe)
    stage = PreStage(graph) if pre_nodes(graph) else None
    inputs: dict[str, InputNeed] = {}
    raw = set(stage.raw_inputs) if stage else set()
    for name, inp in pipe.resolved.inputs.items():
        kind = inp.type.kind if inp.type is not None else "tensor"
        if name in raw:
            inputs[name] = InputNeed(name, renamed.get(name, name), None, kind, raw=True)
        elif kind == "graph":
            inputs[name] = InputNeed(name, renamed.get(name, name), None, kind, graph=graph_group(specs, name))
        elif name in specs:
            cols = spec.data.columns.get(name)
            inputs[name] = InputNeed(name, renamed.get(name, name), specs[name], kind,
                                     columns=tuple(cols) if cols else None)
    out_types = {o: graph.output_type(ref) for o, ref in pipe.resolved.outputs.items()}
    block_nodes = [n for n in graph.order if graph.nodes[n].block is not None and type(graph.nodes[n].block).losses]
    losses = dict(spec.loss)
    wanted = list(dict.fromkeys(list(losses) + list(spec.data.targets)))
    if not wanted and block_nodes:
        boxes = next((o for o, t in out_types.items() if t is not None and t.kind == "boxes"), None)
        if boxes is not None:
            wanted = [boxes]
    if not wanted:      # nothing named: the one class-score output learns the data's `label`
        scores = [o for o, t in out_types.items() if t is not None and t.kind in CLASS_KINDS
                  and (t.kind == "logits" or "logits" in o)]
        if len(scores) == 1:
            wanted = scores
    if not wanted:
        diags.add(E.MISSING_PARAM, "`train` names nothing to learn: no output has a loss or a target",
                  loc=section.key_loc(), path="train.loss",
                  hint=f"add `loss: {{{next(iter(pipe.resolved.outputs))}: cross_entropy}}` and the data field it "
                       f"compares with in `data.targets`")
        raise SpecError(diags.items)
    targets: dict[str, TargetNeed] = {}
    for output in wanted:
        t = out_types.get(output)
        loss = losses.get(output)
        if loss is None:
            loss = _default_loss(output, t, bool(block_nodes))
            losses[output] = loss
        where = ("loss", output) if output in spec.loss else ("data", "targets", output)
        default = "y" if spec.data.format == "graph" else "label" if isinstance(loss, CrossEntropy) else output
        fld = spec.data.targets.get(output) or default
        need = _target(output, fld, t, loss, section, where, diags)
        if need is not None:
            targets[output] = _graph_level(need, t, inputs)
    if any(isinstance(x, BlockLosses) for x in losses.values()) and not block_nodes:
        o = next(o for o, x in losses.items() if isinstance(x, BlockLosses))
        diags.add(E.INVALID_VALUE, "`type: blocks` sums the losses the pipeline's blocks define, and no block of "
                  "this pipeline defines one", loc=section.loc("loss", o, "type"), path=f"train.loss.{o}.type",
                  hint="give the output a loss of its own: cross_entropy, bce, mse, l1 or huber")
    for output, names in spec.metrics.items():
        from .metrics import check_metrics
        check_metrics(output, names, out_types.get(output), targets.get(output), section, diags)
    diags.raise_if_errors()
    return Plan(section, inputs, targets, losses, dict(spec.metrics), stage, block_nodes)


def _graph_level(need: TargetNeed, t, inputs: Mapping[str, InputNeed]) -> TargetNeed:
    """With a graph input: a target per node when the output's first dim is the graph's node
    count N, one per graph when it is G (graph_pool over a batch) or 1."""
    import dataclasses
    graphs = [n for n in inputs.values() if n.kind == "graph" and n.graph and "x" in n.graph]
    if not graphs or t is None or not t.shape or need.role == "detection":
        return need
    first = t.shape[0]
    for n in graphs:
        if n.graph["x"].shape and first == n.graph["x"].shape[0]:
            return dataclasses.replace(need, level="node", graph=n.name)
    if first == 1 or describe_dim(first) == GRAPH_COUNT:
        return dataclasses.replace(need, level="graph", graph=graphs[0].name)
    return need


def _detection_classes(section: TrainSection) -> tuple[Optional[int], str]:
    """The class count of a detector and how its labels number the classes (the `class_ids` of
    its detections): `category`, its box head's count with the background, labels 1..n-1; or
    `index` (a YOLO head), labels 0..n-1."""
    graph = section.graph
    for ports in graph.types.values() if graph is not None else ():
        for t in ports.values():
            if t is not None and t.kind == "detections" and t.get("num_classes"):
                return int(t.get("num_classes")), str(t.get("class_ids") or "category")
    return None, "category"


def has_masks(plan: "Plan") -> bool:
    """Whether a detector also predicts masks (an output of kind `mask`): its COCO targets carry them."""
    graph = plan.section.graph
    return graph is not None and any(
        (t := graph.output_type(ref)) is not None and t.kind == "mask" for ref in graph.resolved.outputs.values())


def _default_loss(output: str, t, has_block_losses: bool):
    """Without a written loss: a detector's block losses, cross-entropy for class scores (kind
    `logits`, or an output named so), else mean squared error."""
    from .config import MSE
    if t is not None and t.kind in DETECTION_KINDS and has_block_losses:
        return BlockLosses(type="blocks")
    if t is not None and (t.kind == "logits" or "logits" in output) and t.kind in CLASS_KINDS:
        return CrossEntropy(type="cross_entropy")
    return MSE(type="mse")


def _target(output: str, fld: str, t, loss, section: TrainSection, where: tuple, diags: Diagnostics
            ) -> Optional[TargetNeed]:
    path = "train." + ".".join(where)
    if isinstance(loss, BlockLosses):
        classes, class_ids = _detection_classes(section)
        return TargetNeed(output, fld, "detection", None, "float32", classes, class_ids=class_ids)
    if t is None or t.shape is None:
        return TargetNeed(output, fld, "value", None, "float32")
    shape = _static(t.shape)
    if isinstance(loss, CrossEntropy):
        if t.kind not in CLASS_KINDS or len(shape) < 2:
            diags.add(E.KIND_MISMATCH, f"cross_entropy compares class scores with class ids, and output `{output}` "
                      f"is `{t.kind}`", loc=section.key_loc(*where), path=path,
                      expected="an output of kind logits, [B, C] or [B, T, C] (classes last)",
                      found=f"{t.kind} [{', '.join(describe_dim(d) for d in t.shape)}]",
                      hint="use mse, l1 or huber for values; bce for independent yes/no scores")
            return None
        c = shape[-1]
        if c is None:
            diags.add(E.SHAPE_MISMATCH, f"output `{output}` has no fixed number of classes", loc=section.key_loc(*where),
                      path=path, hint="the last dim of a cross_entropy output must be a number")
            return None
        return TargetNeed(output, fld, "class", shape[1:-1], "int64", c, loss.ignore_index)
    from .config import BCE
    role = "binary" if isinstance(loss, BCE) else "value"
    return TargetNeed(output, fld, role, shape[1:], "float32")


def describe_dim(d) -> str:
    return format_dim(d) if isinstance(d, Dim) else str(d)
