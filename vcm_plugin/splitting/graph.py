"""Where a PyTorch model can be cut: every graph node, its output shape, and what else crosses the cut.

The model is traced with torchvision's ``NodePathTracer`` (the tracer behind
``torchvision.models.feature_extraction``), so node names are the ones
``get_graph_node_names`` prints (``layer1.0.conv1``, ``layer2``...). Cutting after node
``n`` splits the graph into front (every node up to ``n`` in execution order) and back.
The back needs every front tensor that a back node uses: if that is only ``n``'s output,
``n`` is a clean cut; otherwise (a skip connection such as a ResNet block's identity, or
the input image that a detector's post-processing reads) the extra tensors are named, so
a feature codec either carries them too or the cut is refused.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

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
