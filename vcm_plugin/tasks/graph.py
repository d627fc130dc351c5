"""Cut a traceable PyTorch model (torchvision's) at a graph node, without editing its code.

Where it can be cut: the model is traced with torchvision's ``NodePathTracer`` (the tracer
behind ``torchvision.models.feature_extraction``), so node names are the ones
``get_graph_node_names`` prints (``layer1.0.conv1``, ``layer2``...). Cutting after node
``n`` splits the graph into front (every node up to ``n`` in execution order) and back.
The back needs every front tensor that a back node uses: if that is only ``n``'s output,
``n`` is a clean cut; otherwise (a skip connection such as a ResNet block's identity, or
the input image that a detector's post-processing reads) the extra tensors are named, so
a feature codec either carries them too or the cut is refused (:func:`check_cut`).

How: ``fx_front`` is torchvision's ``create_feature_extractor`` (X -> Y1 at node ``cut``).
``fx_rest`` is the same idea the other way round, which torchvision does not provide: the
traced graph with ``cut``'s output replaced by a new input, ending at node ``stop`` (or
the model's output), dead nodes removed, so Y1 -> Y2 (the task mid-model) or Y1 -> the
output (the back part). A module name (``layer2``) stands for its last node.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from vcm_plugin.errors import TaskModelError


@dataclass(frozen=True)
class CutPoint:
    """One node: its name, output shape (batch first) and the other front tensors the back needs."""

    name: str
    shape: tuple[int, ...] | None
    extra: tuple[str, ...]

    @property
    def clean(self) -> bool:
        """True when the node's output is the only tensor crossing the cut."""
        return not self.extra


def analyse_cuts(model, example) -> list[CutPoint]:
    """Every call node of ``model`` (eval mode) in execution order, with shapes from ``example``."""
    import torch
    from torch.fx import GraphModule
    from torch.fx.passes.shape_prop import ShapeProp
    from torchvision.models.feature_extraction import NodePathTracer

    model = model.eval()
    tracer = NodePathTracer()
    try:
        graph = tracer.trace(model)
    except Exception as exc:  # control flow that torch.fx cannot trace
        raise TaskModelError(f"{type(model).__name__} cannot be traced for cut points: {exc}") from exc
    module = GraphModule(tracer.root, graph)
    with torch.no_grad():
        ShapeProp(module).propagate(example)
    nodes = [n for n in graph.nodes if n.op not in ("output", "get_attr")]
    order = {n: i for i, n in enumerate(graph.nodes)}
    names = {n: tracer.node_to_qualname.get(n, n.name) for n in graph.nodes}
    cuts = []
    for node in nodes:
        if node.op == "placeholder":
            continue
        crossing = [m for m in nodes if order[m] <= order[node] and any(order[u] > order[node] for u in m.users)]
        meta = node.meta.get("tensor_meta")
        shape = tuple(meta.shape) if meta is not None and hasattr(meta, "shape") else None
        cuts.append(CutPoint(names[node], shape, tuple(names[m] for m in crossing if m is not node)))
    return cuts


def check_cut(cuts: Sequence[CutPoint], name: str, model_name: str) -> CutPoint:
    """The cut ``name``; refused (naming the extra tensors) when later layers need earlier ones."""
    by_name = {c.name: c for c in cuts}
    inside = [c for c in cuts if c.name.startswith(name + ".")]
    if name not in by_name and inside:  # a module name: its last node, as create_feature_extractor reads it
        by_name[name] = inside[-1]
    if name not in by_name:
        import difflib

        clean = [c.name for c in cuts if c.clean]
        near = difflib.get_close_matches(name, clean, n=5, cutoff=0.3)
        raise TaskModelError(f"{model_name}: no node {name!r}; nearest clean cut points: {near or clean[:5]} "
                             f"({len(clean)} in all: `vcm layers {model_name}` lists them)")
    cut = by_name[name]
    if cut.extra:
        raise TaskModelError(f"{model_name}: cutting after {name!r} also needs {list(cut.extra)} (skip connections "
                             "or the input); carry them in Y1 or cut elsewhere")
    return cut


def fx_front(model: Any, cut: str) -> Any:
    """A module X -> the tensor at node ``cut`` (torchvision ``create_feature_extractor``)."""
    from torchvision.models.feature_extraction import create_feature_extractor

    extractor = create_feature_extractor(model.eval(), return_nodes={cut: "y1"})

    class Front(type(extractor)):  # unwrap the one-entry dict
        def forward(self, x: Any) -> Any:  # type: ignore[override]
            return super().forward(x)["y1"]

    extractor.__class__ = Front
    return extractor


def fx_rest(model: Any, cut: str, stop: str | None = None) -> Any:
    """A module Y1 (node ``cut``'s output) -> node ``stop``'s output (``None``: the model's output)."""
    from torch.fx import Graph, GraphModule
    from torchvision.models.feature_extraction import NodePathTracer

    tracer = NodePathTracer()
    graph: Graph = tracer.trace(model.eval())
    names = {n: tracer.node_to_qualname.get(n, n.name) for n in graph.nodes}

    def find(name: str) -> Any:
        exact = [n for n in graph.nodes if names.get(n) == name]
        inside = [n for n in graph.nodes if names.get(n, "").startswith(name + ".")]
        if exact or inside:
            return (exact or inside)[-1]
        raise TaskModelError(f"{type(model).__name__}: no node {name!r}")

    cut_node = find(cut)
    output = next(n for n in graph.nodes if n.op == "output")
    with graph.inserting_before(next(iter(graph.nodes))):
        y1 = graph.placeholder("y1")
    cut_node.replace_all_uses_with(y1)
    if stop is not None and stop != cut:
        target = find(stop)
        order = list(graph.nodes)
        if order.index(target) < order.index(cut_node):
            raise TaskModelError(f"{type(model).__name__}: node {stop!r} comes before the cut {cut!r}")
        output.args = (target,)
    elif stop == cut:
        output.args = (y1,)
    module = GraphModule(tracer.root, graph)
    module.graph.eliminate_dead_code()
    for node in [n for n in module.graph.nodes if n.op == "placeholder" and n.name != y1.name and not n.users]:
        module.graph.erase_node(node)
    if any(n.op == "placeholder" and n.name != y1.name for n in module.graph.nodes):
        raise TaskModelError(f"{type(model).__name__}: after cut {cut!r} the model still reads its input")
    module.graph.lint()
    module.recompile()
    return module
