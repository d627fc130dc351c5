"""Cut a traceable PyTorch model (torchvision's) at a graph node, without editing its code.

``fx_front`` is torchvision's ``create_feature_extractor`` (X -> Y1 at node ``cut``).
``fx_rest`` is the same idea the other way round, which torchvision does not provide: the
traced graph with ``cut``'s output replaced by a new input, ending at node ``stop`` (or
the model's output), dead nodes removed, so Y1 -> Y2 (the task mid-model) or Y1 -> the
output (the back part). Node names are those ``get_graph_node_names`` prints; a module
name (``layer2``) stands for its last node. A cut whose later nodes also read earlier
tensors is refused, naming them (:func:`~vcm_plugin.splitting.graph.check_cut`).
"""

from __future__ import annotations

from typing import Any

from vcm_plugin.errors import TaskModelError
from vcm_plugin.splitting.graph import CutPoint, analyse_cuts, check_cut


def resolve_cut(model: Any, cut: str, example: Any, model_name: str) -> CutPoint:
    """The clean cut point ``cut`` of ``model`` (errors list the valid ones or the extra tensors)."""
    return check_cut(analyse_cuts(model, example), cut, model_name)


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
