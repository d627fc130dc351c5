"""Safe YAML loading with YAML 1.2 number rules.

``yaml.safe_load`` refuses every language-specific tag (``!!python/object`` ...), but it
follows YAML 1.1, where ``4:2:0`` is the base-60 integer 14644 and ``1e-3`` is a string.
This loader keeps the safety and resolves numbers as YAML 1.2 does: no base-60 numbers,
exponents with or without a sign, so ``subsampling: 4:2:0`` stays a string and
``lmbda: 1e-3`` is a float.
"""

from __future__ import annotations

import re
from typing import Any

import yaml

_INT = re.compile(r"^(?:[-+]?0b[0-1_]+|[-+]?0o?[0-7_]+|[-+]?(?:0|[1-9][0-9_]*)|[-+]?0x[0-9a-fA-F_]+)$")
_FLOAT = re.compile(r"^(?:[-+]?(?:[0-9][0-9_]*)(?:\.[0-9_]*)?(?:[eE][-+]?[0-9]+)?|[-+]?\.[0-9_]+(?:[eE][-+]?[0-9]+)?"
                    r"|[-+]?\.(?:inf|Inf|INF)|\.(?:nan|NaN|NAN))$")


class SafeLoader12(yaml.SafeLoader):
    """``yaml.SafeLoader`` with YAML 1.2 integer and float resolution."""


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


def safe_load(text: str) -> Any:
    """Parse YAML text safely (no object tags) with YAML 1.2 numbers."""
    return yaml.load(text, Loader=SafeLoader12)  # noqa: S506 - SafeLoader subclass
