"""The proposal budget: a two-stage detector re-exported with its first stage keeping ``K`` proposals.

A Faster R-CNN runs its second stage (crop, box head) once per first-stage
proposal; the OD API keeps ``first_stage_max_proposals`` of them (300 in the
zoo configs, 100 in the demo detector).  :func:`limit_proposals` rewrites an
exported ONNX graph so the first stage keeps at most ``K`` instead:

* **the count**: the first-stage ``NonMaxSuppression`` is the one NMS of the
  graph that every other NMS depends on (the second stage's per-class NMS runs
  on boxes refined from its proposals); its ``max_output_boxes_per_class`` is a
  constant ``P``, the configured proposal count.  It gets a private constant
  ``K`` (tf2onnx shares equal constants, e.g. with the second stage's
  ``max_detections_per_class``, which must keep its value);
* **the static echoes of it**: integer constants holding ``P`` that shape the
  proposal tensors between the first-stage NMS and the later ones (Reshape and
  Expand shapes, Slice bounds, Pad amounts, Tile repeats, TopK ``K``, Range
  limits, and scalar arithmetic such as ``P - n``; the OD API pads its proposals
  to exactly ``P``) get ``K`` in place of ``P``, each in a private copy.  A
  constant holding ``P`` anywhere else in that region, or inside a subgraph
  there, is ambiguous (a channel count that happens to equal ``P``?) and the
  rewrite is refused naming it;
* value infos of tensors after the first-stage NMS are dropped (a static
  ``P`` there would now be wrong), and graph outputs of the proposal region get
  a symbolic first-stage dimension.

Everything else is kept byte for byte.  ``K == P`` gives the same detections
exactly (the same constants, in private copies); ``K < P`` keeps the ``K``
proposals of highest objectness (NMS emits them in score order), so each
kept proposal is cropped and refined exactly as before and a detection is
lost only when the proposal it came from ranked below ``K``.

:func:`proposal_recall` measures that on tiles: the recall of the full
model's detections (score >= :data:`RECALL_SCORE_FLOOR`) by the budgeted one,
via :func:`minescan.export.verify.compare_detections`.

Measured (benchmarks/proposal_budget.md; 2 shared cores, ONNX Runtime 1.32 CPU,
1 thread, 640 px tiles) on the demo detector, P = 100: K = 50 runs in 0.76x
the full model's time, K = 10 in 0.56x, both keeping all 77 of its detections
(score >= 0.5) on 48 tiles of three fresh 2048 px mining scenes; K = 5 keeps
74 (96.1%).  Its time does not fall in proportion to K: the backbone and RPN
stay (tf2onnx's crop_and_resize is a Loop over the proposals, the part that
shrinks).  Not yet measured on a real OD API export (P = 300, proposals padded
to P); the static echoes above are what such a graph is expected to hold.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
from onnx import numpy_helper

from minescan.export.errors import ExportError
from minescan.export.graph_walk import constants as _constants, subgraphs as _subgraphs

RECALL_SCORE_FLOOR = 0.5  # the full model's detections whose recall is reported
RECALL_BOX_TOLERANCE = 0.02  # normalized units (~13 px on a 640 px tile): a kept detection is one this near, same class
BUILD_KEY = "max_proposals"

# (op, input index) slots where an integer constant holding P is read as the proposal count (None: any input).
_SIZE_SLOTS = {
    "Reshape": {1}, "Expand": {1}, "Slice": {1, 2}, "Pad": {1}, "Tile": {1}, "TopK": {1}, "Range": {1},
    "ConstantOfShape": {0}, "Concat": None, "Sub": None, "Add": None, "Min": None, "Max": None,
}
_MAX_CONSTANT = 16  # only small integer constants (shapes, bounds, counts) are looked at


@dataclass(frozen=True)
class ProposalSite:
    """One place the proposal count lives: ``node``'s input ``index`` (a constant holding ``value``) read by an ``op``."""

    node: str
    op: str
    index: int
    value: tuple[int, ...]
    position: int  # of ``node`` in the graph's node list


@dataclass(frozen=True)
class ProposalGraph:
    """Where an exported two-stage detector keeps its first-stage proposal count.

    ``count`` is the first-stage NMS's ``max_output_boxes_per_class``; ``sites``
    the count itself (first) and every static echo of it in the proposal region.
    """

    count: int
    nms: str  # the first-stage NonMaxSuppression node
    later_nms: tuple[str, ...]  # the second stage's NMS nodes
    sites: tuple[ProposalSite, ...]

    def format(self) -> str:
        echoes = ", ".join(f"{s.op} {s.node}[{s.index}]" for s in self.sites[1:]) or "none (the count is dynamic after NMS)"
        return (f"first stage keeps {self.count} proposals (NonMaxSuppression {self.nms}); "
                f"{len(self.sites) - 1} static echoes: {echoes}")


@dataclass(frozen=True)
class BudgetRecall:
    """The budgeted model's detections against the full model's on the same tiles."""

    max_proposals: int
    full_proposals: int
    tiles: int
    compared: int  # full-model detections at or above the score floor
    kept: int  # of those, with a same-class budgeted detection within the box tolerance
    extra: int  # budgeted detections at or above the floor that no full-model detection took
    score_floor: float = RECALL_SCORE_FLOOR
    box_tolerance: float = RECALL_BOX_TOLERANCE

    @property
    def recall(self) -> float:
        """kept / compared; 1.0 when the full model found nothing to lose."""
        return self.kept / self.compared if self.compared else 1.0

    def format(self) -> str:
        return (f"proposal budget {self.max_proposals}/{self.full_proposals}: recall {self.recall:.1%} of the full model's "
                f"{self.compared} detections (score >= {self.score_floor:g}, same class within {self.box_tolerance:g}) "
                f"on {self.tiles} tiles, {self.extra} new ones")


def find_proposals(model: onnx.ModelProto, *, where: str = "the model") -> ProposalGraph:
    """Locate the first-stage proposal count of ``model`` (see the module doc); ExportError when it is ambiguous."""
    graph = model.graph
    nodes = list(graph.node)
    constants = _constants(graph)
    nms = [i for i, n in enumerate(nodes) if n.op_type == "NonMaxSuppression"]
    if len(nms) < 2:
        raise ExportError(f"{where}: found {len(nms)} NonMaxSuppression node(s); a proposal budget needs a two-stage "
                          "detector (a first-stage NMS feeding a second stage with its own)")
    consumers = _consumers(graph)
    descendants = {i: _descendants(nodes, i, consumers) for i in nms}
    firsts = [i for i in nms if all(o == i or o in descendants[i] for o in nms)]
    if len(firsts) != 1:
        names = ", ".join(_key(nodes[i]) for i in nms)
        raise ExportError(f"{where}: no single NonMaxSuppression feeds all the others (found {names}); "
                          "cannot tell the first stage's proposals")
    first = nodes[firsts[0]]
    later = [i for i in nms if i != firsts[0]]
    limit_name = first.input[2] if len(first.input) > 2 else ""
    limit = constants.get(limit_name)
    if limit is None or limit.size != 1 or limit.dtype.kind not in "iu" or int(limit.reshape(-1)[0]) < 1:
        raise ExportError(f"{where}: the first-stage NonMaxSuppression {_key(first)} has no constant positive "
                          f"max_output_boxes_per_class ({limit_name or 'none'}); the proposal count cannot be read")
    count = int(limit.reshape(-1)[0])
    sites = [ProposalSite(_key(first), first.op_type, 2, (count,), firsts[0])]
    for position in sorted(_region(nodes, firsts[0], later, consumers)):
        node = nodes[position]
        for index, name in enumerate(node.input):
            value = constants.get(name)
            if value is None or value.dtype.kind not in "iu" or value.size > _MAX_CONSTANT or count not in value.reshape(-1):
                continue
            slots = _SIZE_SLOTS.get(node.op_type, set())
            if slots is not None and index not in slots:
                raise ExportError(f"{where}: constant {name} = {value.reshape(-1).tolist()} holds the proposal count "
                                  f"{count} as input {index} of {node.op_type} {_key(node)}, not a shape or size; "
                                  "cannot tell whether it is the proposal count")
            sites.append(ProposalSite(_key(node), node.op_type, index, tuple(int(v) for v in value.reshape(-1)), position))
        for sub in _subgraphs(node):
            for name, value in _constants(sub).items():
                if value.dtype.kind in "iu" and value.size <= _MAX_CONSTANT and count in value.reshape(-1):
                    raise ExportError(f"{where}: constant {name} = {value.reshape(-1).tolist()} inside {node.op_type} "
                                      f"{_key(node)} holds the proposal count {count}; subgraphs are not rewritten")
    return ProposalGraph(count, _key(first), tuple(_key(nodes[i]) for i in later), tuple(sites))


def limit_proposals(model: onnx.ModelProto, max_proposals: int, *, where: str = "the model") -> tuple[onnx.ModelProto, ProposalGraph]:
    """A copy of ``model`` whose first stage keeps at most ``max_proposals`` proposals, and where the count was found.

    ``max_proposals`` must lie in 1..P, P the configured count (a larger one
    would run the second stage on proposals it was never trained to see and
    overflow the graph's static echoes of P).
    """
    found = find_proposals(model, where=where)
    if not isinstance(max_proposals, (int, np.integer)) or isinstance(max_proposals, bool) or not 1 <= max_proposals <= found.count:
        raise ExportError(f"--max-proposals {max_proposals} is out of range for {where}: its first stage keeps "
                          f"{found.count} proposals; choose 1..{found.count}")
    rewritten = onnx.ModelProto()
    rewritten.CopyFrom(model)
    graph = rewritten.graph
    constants = _constants(graph)
    replaced_names = set()
    for number, site in enumerate(found.sites):
        node = graph.node[site.position]
        replaced_names.add(node.input[site.index])
        value = constants[node.input[site.index]]
        replaced = np.where(value == found.count, max_proposals, value).astype(value.dtype)
        name = f"{site.node}/max_proposals_{number}"
        graph.initializer.append(numpy_helper.from_array(replaced, name))
        node.input[site.index] = name
    # The originals no node reads any more go (ONNX Runtime warns about unused initializers).
    unused = replaced_names - _outer_names(graph) - {o.name for o in graph.output}
    kept = [i for i in graph.initializer if i.name not in unused]
    del graph.initializer[:]
    graph.initializer.extend(kept)
    _forget_shapes(graph, found)
    return rewritten, found


def build_budget(source: str | Path | onnx.ModelProto, out_path: str | Path | None, max_proposals: int, *,
                 where: str | None = None) -> tuple[onnx.ModelProto, ProposalGraph]:
    """Rewrite ``source`` (an ONNX detector) with ``max_proposals``, record it in ``minescan.build`` and check that
    ONNX Runtime loads and runs it; write it to ``out_path`` when given.  ``where`` names the model in errors
    (default: ``source``'s path)."""
    from minescan.export.detections import open_session, run_onnx, synthetic_tiles
    from minescan.export.onnx_metadata import read_metadata, write_metadata
    from minescan.results.atomic import write_atomically

    where = where or ("the model" if isinstance(source, onnx.ModelProto) else str(source))
    model = source if isinstance(source, onnx.ModelProto) else onnx.load(str(source))
    rewritten, found = limit_proposals(model, max_proposals, where=where)
    meta = read_metadata(rewritten)
    build = {**meta.build, BUILD_KEY: int(max_proposals), "proposals_configured": found.count}
    write_metadata(rewritten, dataclasses.replace(meta, build=build))
    try:
        onnx.checker.check_model(rewritten)
    except onnx.checker.ValidationError as exc:
        raise ExportError(f"{where} with --max-proposals {max_proposals} is not valid ONNX: {str(exc).splitlines()[0]}") from exc
    data = rewritten.SerializeToString()
    size = meta.input_size or (256, 256)
    try:
        run_onnx(open_session(data), synthetic_tiles(1, size, seed=0))
    except ExportError:
        raise
    except Exception as exc:  # ONNX Runtime's own error types: a static echo of P this rewrite did not see
        raise ExportError(f"{where} with --max-proposals {max_proposals} does not run in ONNX Runtime: "
                          f"{str(exc).strip().splitlines()[0][:200]}") from exc
    if out_path is not None:
        write_atomically(Path(out_path), data)
    return rewritten, found


def proposal_recall(full, budgeted, tiles: np.ndarray, max_proposals: int, full_proposals: int) -> BudgetRecall:
    """Recall of ``full``'s detections by ``budgeted`` (ONNX paths, bytes or sessions) on ``tiles``."""
    from minescan.export.detections import run_onnx
    from minescan.export.verify import compare_detections

    report = compare_detections(run_onnx(full, tiles), run_onnx(budgeted, tiles), score_floor=RECALL_SCORE_FLOOR,
                                box_tolerance=RECALL_BOX_TOLERANCE, score_tolerance=1.0)
    return BudgetRecall(max_proposals, full_proposals, report.tiles, report.compared, report.matched,
                        report.unmatched_candidates)






def _outer_names(graph: onnx.GraphProto) -> set[str]:
    """Names a subgraph reads (its own included; the caller intersects with the outer graph's tensors)."""
    names: set[str] = set()
    for node in graph.node:
        names.update(node.input)
        for sub in _subgraphs(node):
            names |= _outer_names(sub)
    return names


def _key(node: onnx.NodeProto) -> str:
    return node.name or node.output[0]


def _consumers(graph: onnx.GraphProto) -> dict[str, list[int]]:
    """Tensor name -> positions of the top-level nodes reading it, through subgraph bodies too (a Loop reading
    outer tensors)."""
    consumers: dict[str, list[int]] = {}
    for position, node in enumerate(graph.node):
        names = set(node.input)
        for sub in _subgraphs(node):
            names |= _outer_names(sub)
        for name in names:
            if name:
                consumers.setdefault(name, []).append(position)
    return consumers


def _descendants(nodes: list[onnx.NodeProto], start: int, consumers: dict[str, list[int]]) -> set[int]:
    """Positions of the nodes that depend on node ``start``'s outputs (``start`` excluded)."""
    seen: set[int] = set()
    stack = [start]
    while stack:
        for output in nodes[stack.pop()].output:
            for position in consumers.get(output, ()):
                if position not in seen:
                    seen.add(position)
                    stack.append(position)
    return seen


def _region(nodes: list[onnx.NodeProto], first: int, later: list[int], consumers: dict[str, list[int]]) -> set[int]:
    """The proposal region: nodes after the first-stage NMS that are neither a later NMS nor after one."""
    after_later: set[int] = set(later)
    for position in later:
        after_later |= _descendants(nodes, position, consumers)
    return _descendants(nodes, first, consumers) - after_later


def _forget_shapes(graph: onnx.GraphProto, found: ProposalGraph) -> None:
    """Drop value infos after the first-stage NMS; give outputs of the proposal region (and the NMS's own) a
    symbolic dimension where it was P."""
    nodes = list(graph.node)
    consumers = _consumers(graph)
    first = next(i for i, n in enumerate(nodes) if _key(n) == found.nms)
    later = [i for i, n in enumerate(nodes) if _key(n) in found.later_nms]
    after = _descendants(nodes, first, consumers) | {first}
    produced = {out for i in after for out in nodes[i].output}
    region = {out for i in _region(nodes, first, later, consumers) | {first} for out in nodes[i].output}
    kept = [v for v in graph.value_info if v.name not in produced]
    del graph.value_info[:]
    graph.value_info.extend(kept)
    for output in graph.output:
        if output.name in region:
            for dim in output.type.tensor_type.shape.dim:
                if dim.HasField("dim_value") and dim.dim_value == found.count:
                    dim.dim_param = "proposals"


__all__ = ["BudgetRecall", "ProposalGraph", "ProposalSite", "build_budget", "find_proposals", "limit_proposals",
           "proposal_recall"]
