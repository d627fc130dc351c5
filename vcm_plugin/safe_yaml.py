"""Safe YAML loading with YAML 1.2 number rules.

``yaml.safe_load`` refuses every language-specific tag (``!!python/object`` ...), but it
follows YAML 1.1, where ``4:2:0`` is the base-60 integer 14644 and ``1e-3`` is a string.
This loader keeps the safety and resolves numbers as YAML 1.2 does: no base-60 numbers,
exponents with or without a sign, so ``subsampling: 4:2:0`` stays a string and
``lmbda: 1e-3`` is a float.

Size limits: an alias (``*a``) shares the node of its anchor, so a few hundred bytes of
nested aliases ("billion laughs") describe a tree of 10^9 leaves that every consumer
(OmegaConf, pydantic, ``json``) then expands. The loader counts the nodes of the
*expanded* document while composing it and refuses more than :data:`MAX_NODES` (and
texts over :data:`MAX_CHARS`, and recursive aliases) with :class:`YAMLLimitError`,
before any object is built.
"""

from __future__ import annotations

import re
from typing import Any

import yaml

#: Most nodes (scalars, sequences, mappings, counting each alias as the whole subtree it
#: stands for) one document may expand to. A large run config has a few thousand.
MAX_NODES = 100_000
#: Most characters of one YAML text (config files are a few kilobytes).
MAX_CHARS = 10_000_000

_INT = re.compile(r"^(?:[-+]?0b[0-1_]+|[-+]?0o?[0-7_]+|[-+]?(?:0|[1-9][0-9_]*)|[-+]?0x[0-9a-fA-F_]+)$")
_FLOAT = re.compile(r"^(?:[-+]?(?:[0-9][0-9_]*)(?:\.[0-9_]*)?(?:[eE][-+]?[0-9]+)?|[-+]?\.[0-9_]+(?:[eE][-+]?[0-9]+)?"
                    r"|[-+]?\.(?:inf|Inf|INF)|\.(?:nan|NaN|NAN))$")


class YAMLLimitError(yaml.YAMLError):
    """A YAML text is too large, expands to too many nodes (alias bomb) or has a recursive alias."""


class SafeLoader12(yaml.SafeLoader):
    """``yaml.SafeLoader`` with YAML 1.2 integer and float resolution and size limits."""

    max_nodes: int = MAX_NODES

    def compose_document(self) -> yaml.Node:
        self._expanded: dict[int, int] = {}  # id(node) -> nodes of its expanded subtree (nodes stay alive)
        try:
            return super().compose_document()
        finally:
            self._expanded = {}

    def compose_node(self, parent: yaml.Node | None, index: Any) -> yaml.Node:
        if self.check_event(yaml.AliasEvent):
            event = self.peek_event()
            target = self.anchors.get(event.anchor)
            if target is not None and id(target) not in self._expanded:
                raise YAMLLimitError(f"recursive alias *{event.anchor} (line {event.start_mark.line + 1}) refers to "
                                     "the node that contains it")
        node = super().compose_node(parent, index)
        size = self._expanded.get(id(node))
        if size is None:  # freshly composed (an alias returns its anchor's node, already counted)
            if isinstance(node, yaml.SequenceNode):
                size = 1 + sum(self._expanded[id(child)] for child in node.value)
            elif isinstance(node, yaml.MappingNode):
                size = 1 + sum(self._expanded[id(k)] + self._expanded[id(v)] for k, v in node.value)
            else:
                size = 1
            self._expanded[id(node)] = size
        if size > self.max_nodes:
            raise YAMLLimitError(f"the document expands to more than {self.max_nodes:,} nodes (at line "
                                 f"{node.start_mark.line + 1}; aliases count as the subtree they repeat): refused")
        return node


SafeLoader12.yaml_implicit_resolvers = {
    first: [(tag, rx) for tag, rx in resolvers if tag not in ("tag:yaml.org,2002:int", "tag:yaml.org,2002:float")]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
SafeLoader12.add_implicit_resolver("tag:yaml.org,2002:int", _INT, list("-+0123456789"))
SafeLoader12.add_implicit_resolver("tag:yaml.org,2002:float", _FLOAT, list("-+0123456789."))


def _construct_int(loader: SafeLoader12, node: yaml.ScalarNode) -> int:
    text = loader.construct_scalar(node).replace("_", "")
    if re.match(r"^[-+]?0o[0-7]+$", text):
        return int(text.replace("0o", ""), 8)
    return yaml.SafeLoader.construct_yaml_int(loader, node)


SafeLoader12.add_constructor("tag:yaml.org,2002:int", _construct_int)


def safe_load(text: str, max_nodes: int = MAX_NODES, max_chars: int = MAX_CHARS) -> Any:
    """Parse YAML text safely (no object tags) with YAML 1.2 numbers.

    Raises :class:`YAMLLimitError` (a ``yaml.YAMLError``) when the text is longer than
    ``max_chars`` or its document expands to more than ``max_nodes`` nodes.
    """
    if len(text) > max_chars:
        raise YAMLLimitError(f"the text is {len(text):,} characters, more than the limit of {max_chars:,}: refused")
    loader = SafeLoader12(text)
    loader.max_nodes = max_nodes
    try:
        return loader.get_single_data()
    finally:
        loader.dispose()


def parse_key_value(item: str, where: str, error: type[Exception], empty: Any = "") -> tuple[str, Any]:
    """``key=value`` -> (key, value as a safe YAML 1.2 scalar, ``empty`` when blank): the one ``key=value`` parser.

    Used by ``vcm ... --param`` and by config overrides; a malformed item raises
    ``error`` with a message starting with ``where`` and the item.
    """
    key, sep, value = item.partition("=")
    if not sep or not key.strip():
        raise error(f"{where} {item!r}: expected key=value")
    try:
        return key.strip(), safe_load(value) if value.strip() else empty
    except yaml.YAMLError as exc:
        raise error(f"{where} {item!r}: cannot parse the value ({exc})") from exc
