"""Typed plugin parameters: codec / task-model / dataset parameters checked against their annotations.

A plugin's parameters are its dataclass fields (or, for a plain class, its constructor's
arguments), typed with ordinary annotations (``preset: Literal["fast", "medium"]``,
``threads: int``, ``search_path: list[str] | None``). :func:`validate_params` checks the
values given, before the plugin is built, with a pydantic ``TypeAdapter`` per annotation
(built once per class), in a strict-ish mode: an int is a valid float, a list a valid
``list[str]`` or tuple, a string a valid path; a string or a bool is not an int, a number
is not a string, and None is valid only where the annotation allows it. Annotations that
cannot be resolved or turned into a schema accept anything (the plugin checks them).

:func:`describe_error` words one pydantic error ("expected int, got str 'two'"); the config
loader formats its own schema errors with it too.
"""

from __future__ import annotations

import dataclasses
import inspect
import sys
import types
import typing
from functools import cache
from typing import Annotated, Any, Literal, Union

from pydantic import ConfigDict, Strict, StrictBool, StrictInt, StrictStr, TypeAdapter, ValidationError

from vcm_plugin.errors import VcmError

# the types of a parameter whose errors read "expected <name>, got <type> <value>"
_EXPECTED = {
    "string_type": "str", "int_type": "int", "int_parsing": "int", "int_from_float": "int",
    "float_type": "number", "float_parsing": "number", "bool_type": "true or false", "bool_parsing": "true or false",
    "list_type": "list", "tuple_type": "list", "set_type": "list", "dict_type": "mapping", "path_type": "path",
    "none_required": "null", "mapping_type": "mapping", "iterable_type": "list",
}
_STRICT: dict[Any, Any] = {int: StrictInt, bool: StrictBool, str: StrictStr, float: Annotated[float, Strict()]}
_CONFIG = ConfigDict(arbitrary_types_allowed=True)


def describe_error(err: Any) -> str:
    """One pydantic error (an item of ``ValidationError.errors()``) in words, without its location."""
    kind, value = err.get("type"), err.get("input")
    if kind in _EXPECTED:
        return f"expected {_EXPECTED[kind]}, got {_got(value)}"
    if kind == "literal_error":
        return f"expected {err.get('ctx', {}).get('expected', 'one of the allowed values')}, got {value!r}"
    if kind == "is_instance_of":
        return f"expected {err.get('ctx', {}).get('class', 'another type')}, got {_got(value)}"
    return str(err.get("msg", err))


def _got(value: Any) -> str:
    return "null" if value is None else f"{type(value).__name__} {value!r}"


def param_errors(cls: type, params: dict[str, Any]) -> list[tuple[str, str]]:
    """(parameter, what is wrong) for each value of ``params`` its annotation in ``cls`` refuses.

    Names ``cls`` does not take are left to its constructor (and the config's key check).
    """
    adapters = _adapters(cls)
    problems = []
    for name, value in params.items():
        adapter = adapters.get(name)
        if adapter is None:
            continue
        try:
            adapter.validate_python(value)
        except ValidationError as exc:
            problems.append((name, _join(exc.errors())))
    return problems


def validate_params(cls: type, params: dict[str, Any], what: str, error: type[Exception] = VcmError) -> None:
    """Raise ``error`` ("<what>: parameter 'p': expected str, got int 3") if a value does not fit its annotation."""
    problems = param_errors(cls, params)
    if problems:
        raise error(f"{what}: " + "; ".join(f"parameter {name!r}: {message}" for name, message in problems))


def _join(errors: list[Any]) -> str:
    """The errors of one parameter: a union's type errors as one "expected A or B", with item positions."""
    by_place: dict[str, list[Any]] = {}
    for err in errors:
        place = ".".join(str(p) for p in err["loc"] if isinstance(p, int))
        by_place.setdefault(place, []).append(err)
    parts = []
    for place, errs in by_place.items():
        prefix = f"item {place}: " if place else ""
        if all(e["type"] in _EXPECTED for e in errs):
            expected = " or ".join(dict.fromkeys(_EXPECTED[e["type"]] for e in errs))
            parts.append(f"{prefix}expected {expected}, got {_got(errs[0]['input'])}")
        else:
            parts.append(prefix + "; ".join(dict.fromkeys(describe_error(e) for e in errs)))
    return "; ".join(parts)


@cache
def _adapters(cls: type) -> dict[str, TypeAdapter[Any]]:
    """A TypeAdapter per init parameter of ``cls`` (dataclass fields, else constructor arguments)."""
    if dataclasses.is_dataclass(cls):
        names = [f.name for f in dataclasses.fields(cls) if f.init and not f.name.startswith("_")]
        raw = {f.name: f.type for f in dataclasses.fields(cls)}
        owner: Any = cls
    else:
        try:
            signature = inspect.signature(cls)
        except (TypeError, ValueError):
            return {}
        names = [p.name for p in signature.parameters.values()
                 if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY) and not p.name.startswith("_")]
        raw = {p.name: p.annotation for p in signature.parameters.values()}
        owner = cls.__init__
    hints = _hints(owner, raw)
    adapters = {}
    for name in names:
        hint = hints.get(name, Any)
        if hint is Any or hint is inspect.Parameter.empty:
            continue
        try:
            adapters[name] = TypeAdapter(_strict(hint), config=_CONFIG)
        except Exception:  # an annotation pydantic cannot check: the plugin does
            continue
    return adapters


def _hints(owner: Any, raw: dict[str, Any]) -> dict[str, Any]:
    """Resolved annotations (strings under ``from __future__ import annotations``); Any where unresolvable."""
    try:
        return typing.get_type_hints(owner)
    except Exception:
        pass
    module = sys.modules.get(getattr(owner, "__module__", ""), None)
    namespace = dict(vars(module)) if module is not None else {}
    hints = {}
    for name, annotation in raw.items():
        if isinstance(annotation, str):
            try:
                annotation = eval(annotation, namespace)  # noqa: S307 - an annotation of a loaded class
            except Exception:
                annotation = Any
        hints[name] = annotation
    return hints


def _strict(tp: Any) -> Any:
    """``tp`` with int / bool / str / float made strict (a float still takes an int), inside unions and containers."""
    try:
        if tp in _STRICT:
            return _STRICT[tp]
    except TypeError:  # unhashable (e.g. a Callable's argument list)
        return tp
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin is None or not args or origin in (Literal, Annotated):
        return tp
    try:
        if origin in (Union, types.UnionType):
            return Union[tuple(_strict(a) for a in args)]  # noqa: UP007 - built from a tuple
        return origin[tuple(_strict(a) for a in args)]
    except TypeError:
        return tp
