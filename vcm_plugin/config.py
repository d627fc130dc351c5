"""Run configurations: YAML (loaded safely), ``key=value`` overrides, a validated schema.

A config names the dataset, the task models, the codecs with their qualities and
parameters, the anchors and the output folder::

    dataset: {name: coco, images: ${oc.env:VCM_SHARED,../shared}/data/coco/val2017, ...}
    tasks:   {detection: {model: yolov5, weights: yolov5n.pt}}
    codecs:  {vvc: {qualities: [42, 37, 32, 27], preset: medium}, jpeg: {qualities: [...]}}
    anchors: [vvc, jpeg]

Every codec/task entry is keyed by a label; ``codec:`` / ``model:`` default to the
label, other keys are the codec's or model's parameters, checked against its dataclass
fields and their types. Unknown or misspelled keys fail before any work, naming the key
and the nearest valid one; an error caused by a ``key=value`` override names the
override, not the file. ``${oc.env:VAR,default}`` interpolation comes from OmegaConf; the
YAML is :mod:`vcm_plugin.safe_yaml`'s (no tags, YAML 1.2 numbers, size limits).
``codecs.<label>=null`` / ``tasks.<label>=null`` removes an entry (see
:func:`_apply_overrides`); relative paths written in a config file are relative to its
folder (:func:`_resolve_paths`); ``output`` and paths given on the command line are relative
to the working directory.
"""

from __future__ import annotations

import contextlib
import dataclasses
import difflib
import inspect
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Literal, TypeVar

import yaml
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import MissingMandatoryValue, OmegaConfBaseException
from pydantic import BaseModel, ConfigDict, Field, ValidationError, ValidationInfo, field_validator, model_validator

from vcm_plugin.errors import VcmError
from vcm_plugin.safe_yaml import MAX_CHARS, YAMLLimitError, parse_key_value, safe_load

ModelT = TypeVar("ModelT", bound=BaseModel)

#: ``cache: auto`` (the default): the shared unit cache in $VCM_CACHE, else in the user's cache folder
CACHE_AUTO = "auto"


class ConfigError(VcmError, ValueError):
    """A configuration file or override is invalid (names the file and the key)."""


class StrictModel(BaseModel):
    """A pydantic schema whose unknown keys are errors."""

    model_config = ConfigDict(extra="forbid")


class DatasetConfig(BaseModel):
    """``name`` is a registered dataset; the other keys are its parameters."""

    model_config = ConfigDict(extra="allow")
    name: str
    max_images: int | None = Field(default=None, ge=1)


class TaskConfig(BaseModel):
    """A task model: ``model`` (registered name, default = the label) plus its parameters."""

    model_config = ConfigDict(extra="allow")
    model: str | None = None
    task: str | None = None  # a registered task name (vcm_plugin.evaluation.kinds); default: the model's

    @field_validator("task")
    @classmethod
    def _task_registered(cls, value: str | None) -> str | None:
        from vcm_plugin.evaluation.kinds import task_names

        if value is not None and value not in task_names():
            raise ValueError(f"unknown task {value!r}; registered tasks: {', '.join(task_names())}")
        return value


class CodecConfig(BaseModel):
    """A codec configuration: ``codec`` (default = the label), qualities, pre-scaling, parameters."""

    model_config = ConfigDict(extra="allow")
    codec: str | None = None
    qualities: list[float | int] = Field(min_length=1)
    scales: list[float] = Field(default_factory=lambda: [1.0])  # pre-scaling factors

    @field_validator("qualities", mode="before")
    @classmethod
    def _qualities_not_bool(cls, value: Any) -> Any:
        # pydantic would take `true` as the number 1 (lax mode): a YAML slip, never a quality
        for q in value if isinstance(value, list) else ():
            if isinstance(q, bool):
                raise ValueError(f"quality {str(q).lower()} is a boolean, not a number")
        return value

    @field_validator("scales")
    @classmethod
    def _scales_in_range(cls, value: list[float]) -> list[float]:
        if bad := [s for s in value if not 0 < s <= 1]:
            raise ValueError(f"scale {bad[0]} must be in (0, 1]")
        return value


class WeightsConfig(StrictModel):
    search_path: list[str] = Field(default_factory=list)


class ExecutorConfig(StrictModel):
    """Where the units run: ``local`` (a process pool, default) or ``dask`` (a Dask cluster).

    For ``dask``: ``address`` of an existing scheduler (``tcp://host:8786``), or ``cluster``
    ``local`` (dask.distributed ``LocalCluster``, ``workers`` processes of one thread),
    ``slurm`` / ``pbs`` (dask-jobqueue; ``cluster_options`` passed through, ``workers``
    jobs). ``shard_size``: images per Dask task (one codec point). ``task_timeout``:
    seconds one image may take (codec + task models) before it is failed; any executor.
    """

    kind: Literal["local", "dask"] = "local"
    address: str | None = None
    cluster: Literal["local", "slurm", "pbs"] | None = None
    workers: int | None = Field(default=None, ge=1)
    cluster_options: dict[str, Any] = Field(default_factory=dict)
    shard_size: int = Field(default=8, ge=1)
    retries: int = Field(default=2, ge=0)
    task_timeout: float | None = Field(default=None, gt=0)

    @model_validator(mode="before")
    @classmethod
    def _shorthand(cls, value: Any) -> Any:
        """``executor: dask`` means ``{kind: dask}``; an ``address`` or ``cluster`` alone implies dask."""
        if isinstance(value, str):
            return {"kind": value}
        if isinstance(value, dict) and "kind" not in value and (value.get("address") or value.get("cluster")):
            return {**value, "kind": "dask"}
        return value

    @model_validator(mode="after")
    def _dask_needs_a_target(self) -> ExecutorConfig:
        if self.kind == "dask" and not self.address and not self.cluster:
            self.cluster = "local"
        if self.address and self.cluster:
            raise ValueError("executor: give either `address` (an existing scheduler) or `cluster`, not both")
        if self.kind == "local" and (self.address or self.cluster):
            raise ValueError("executor: `address` / `cluster` need `kind: dask`")
        return self


class ReportConfig(StrictModel):
    """What the reports of a run hold. ``formats``: ``default`` (results.csv, BD-rate tables, RD plots) and / or
    ``cttc`` (the MPEG FCM CTTC template's CSV / XLSX, :mod:`vcm_plugin.reports.cttc`). ``bootstrap``: image
    resamples for the 95 % BD-rate intervals (0 = none), drawn with ``seed``; ``fill_overlap``: after the run,
    add the qualities a BD-rate without enough curve overlap needs to the codec entries and run those units
    too (as ``vcm run --fill-overlap``)."""

    formats: list[Literal["default", "cttc"]] = Field(default_factory=lambda: ["default"], min_length=1)
    bootstrap: int = Field(default=1000, ge=0)
    seed: int = 0
    fill_overlap: bool = False


class RunConfig(StrictModel):
    """The whole run."""

    name: str = "run"
    output: str = "outputs/run"
    dataset: DatasetConfig
    tasks: dict[str, TaskConfig] = Field(min_length=1)
    codecs: dict[str, CodecConfig] = Field(min_length=1)
    anchors: list[str] = Field(default_factory=list)
    weights: WeightsConfig = Field(default_factory=WeightsConfig)
    jobs: int | None = Field(default=None, ge=1)
    executor: ExecutorConfig = Field(default_factory=ExecutorConfig)
    published_anchors: list[str] = Field(default_factory=list)  # anchors/published/*.yaml
    bd_method: Literal["pchip", "akima", "cubic"] = "pchip"
    non_monotonic: Literal["error", "envelope"] = "envelope"
    report: ReportConfig = Field(default_factory=ReportConfig)
    #: outputs stored content-addressed under OUTPUT/objects (vcm_plugin.pipeline.objects); not part of unit keys
    keep: list[Literal["bitstreams", "reconstructions"]] = Field(default_factory=list)
    #: the shared unit cache folder (vcm_plugin.results.cache): a path, ``auto`` ($VCM_CACHE, else the user's
    #: cache folder) or null (off); where, not what: not part of unit keys nor of the manifest's config hash
    cache: str | None = CACHE_AUTO

    @field_validator("cache", mode="before")
    @classmethod
    def _cache_false_is_off(cls, value: Any) -> Any:
        return None if value is False else value

    @field_validator("anchors")
    @classmethod
    def _anchors_are_codecs(cls, value: list[str], info: ValidationInfo) -> list[str]:
        codecs = info.data.get("codecs")  # absent when the codecs themselves are invalid
        for anchor in value if codecs is not None else []:
            if anchor not in codecs:
                raise ValueError(f"anchor {anchor!r} is not one of the codecs {sorted(codecs)}")
        return value

    def codec_params(self, label: str) -> tuple[str, dict[str, Any]]:
        """(registered codec name, parameters) of the codec entry ``label``."""
        entry = self.codecs[label]
        return entry.codec or label, dict(entry.model_extra or {})

    def task_params(self, label: str) -> tuple[str, dict[str, Any]]:
        """(registered task-model name, parameters) of the task entry ``label``."""
        entry = self.tasks[label]
        return entry.model or label, dict(entry.model_extra or {})

    def dataset_params(self) -> dict[str, Any]:
        params = dict(self.dataset.model_extra or {})
        if self.dataset.max_images is not None:
            params["max_images"] = self.dataset.max_images
        return params


# -- loading ----------------------------------------------------------------------------
def _nearest(key: str, valid: list[str]) -> str:
    close = difflib.get_close_matches(key, valid, n=1, cutoff=0.5)
    return f"; did you mean {close[0]!r}?" if close else f"; valid keys: {', '.join(sorted(valid))}"


@dataclasses.dataclass
class _Provenance:
    """Where each key came from: the config file (``source``) or a command-line override."""

    source: str
    overrides: list[tuple[tuple[str, ...], str]] = dataclasses.field(default_factory=list)  # (key parts, item)
    removed: dict[tuple[str, ...], str] = dataclasses.field(default_factory=dict)  # (section, label) -> item

    def override_for(self, loc: tuple[Any, ...] | list[Any]) -> str | None:
        """The last override that set ``loc``, a key above it or a key below it; None if none did."""
        parts = tuple(str(p) for p in loc)
        for keys, item in reversed(self.overrides):
            n = min(len(keys), len(parts))
            if n and keys[:n] == parts[:n]:
                return item
        return None

    def blame(self, loc: tuple[Any, ...] | list[Any]) -> str:
        """``override 'k=v' (on FILE)`` when an override set ``loc``, else the config file."""
        item = self.override_for(loc)
        return f"override {item!r} (on {self.source})" if item is not None else self.source


@contextlib.contextmanager
def _blaming(prov: _Provenance, loc: tuple[str, ...]) -> Iterator[None]:
    """Re-raise a plugin error (unknown codec, quality out of range) naming the override that caused it."""
    try:
        yield
    except VcmError as exc:
        if isinstance(exc, ConfigError) or prov.override_for(loc) is None:
            raise
        try:
            new = type(exc)(f"{prov.blame(loc)}: {exc}")
        except Exception:  # an exception class with another constructor
            raise exc from None
        raise new from exc


def _check_plugin_params(config: RunConfig, prov: _Provenance) -> None:
    """Codec / task / dataset parameters must be fields of the registered class, of their annotated types.

    Each codec is built (cheap: nothing is loaded) to check its qualities against the range
    of that configuration (e.g. a learned model trained at fewer qualities than its class).
    """
    from vcm_plugin.codecs.registry import get_codec, get_codec_class
    from vcm_plugin.datasets.registry import get_dataset_class
    from vcm_plugin.tasks.registry import get_task_model_class

    for label, entry in config.codecs.items():
        name, params = config.codec_params(label)
        with _blaming(prov, ("codecs", label, "codec")):
            cls = get_codec_class(name)
        _check_fields(cls, params, prov, ("codecs", label), extra=["codec", "qualities", "scales"])
        with _blaming(prov, ("codecs", label)):
            codec = get_codec(name, **params)
        with _blaming(prov, ("codecs", label, "qualities")):
            for q in entry.qualities:
                codec.quality_range.validate(q, name)
    for label in config.tasks:
        name, params = config.task_params(label)
        with _blaming(prov, ("tasks", label, "model")):
            task_cls = get_task_model_class(name)
        _check_fields(task_cls, params, prov, ("tasks", label), extra=["model", "task"])
    with _blaming(prov, ("dataset", "name")):
        dataset_cls = get_dataset_class(config.dataset.name)
    _check_fields(dataset_cls, dict(config.dataset.model_extra or {}), prov, ("dataset",),
                  extra=["name", "max_images"])


def _check_fields(cls: type, params: dict[str, Any], prov: _Provenance, section: tuple[str, ...],
                  extra: list[str]) -> None:
    if dataclasses.is_dataclass(cls):
        valid = [f.name for f in dataclasses.fields(cls) if f.init]
    else:
        signature = inspect.signature(cls)
        if any(p.kind is p.VAR_KEYWORD for p in signature.parameters.values()):
            return
        valid = list(signature.parameters)
    for key in params:
        if key not in valid:
            raise ConfigError(f"{prov.blame((*section, key))}: {'.'.join(section)}: unknown key "
                              f"{key!r}{_nearest(key, valid + extra)}")
    from vcm_plugin.params import param_errors

    problems = param_errors(cls, params)
    if problems:
        key, message = problems[0]
        raise ConfigError(f"{prov.blame((*section, key))}: {'.'.join(section)}: parameter {key!r}: {message}")


def _validate(model: type[ModelT], data: dict[str, Any], prov: _Provenance) -> ModelT:
    """``data`` validated by ``model``; a :class:`ConfigError` naming each error's file or override."""
    from vcm_plugin.params import describe_error  # the one wording of pydantic errors (plugin parameters too)

    try:
        return model.model_validate(data)
    except ValidationError as exc:
        errors = exc.errors()
    parts: list[tuple[str, str]] = []  # (file or override, message)
    for err in errors:
        where = prov.blame(err["loc"])
        loc = ".".join(str(p) for p in err["loc"])
        if err["type"] == "extra_forbidden":
            parent: type[BaseModel] = model
            for p in err["loc"][:-1]:
                field = parent.model_fields.get(str(p))
                ann = getattr(field, "annotation", None)
                if isinstance(ann, type) and issubclass(ann, BaseModel):
                    parent = ann
            key = str(err["loc"][-1])
            parts.append((where, f"unknown key {loc!r}{_nearest(key, list(parent.model_fields))}"))
        elif err["type"] == "missing":
            parts.append((where, f"missing key {loc!r}"))
        else:
            parts.append((where, f"{loc or 'config'}: {describe_error(err)}"))
    if len({where for where, _ in parts}) == 1:
        raise ConfigError(f"{parts[0][0]}: " + "; ".join(message for _, message in parts))
    raise ConfigError("; ".join(f"{where}: {message}" for where, message in parts))


def load_config(path: str | Path, overrides: list[str] | None = None, check_plugins: bool = True) -> RunConfig:
    """Load, override, interpolate and validate a run config; errors name the file or the override.

    Relative paths written in the file are resolved against the file's folder (see the
    module docstring); those given as overrides are left relative to the working directory.
    """
    return config_from_dict(read_yaml_mapping(path), overrides, str(path), check_plugins,
                            config_dir=Path(path).resolve().parent)


def read_yaml_mapping(path: str | Path) -> dict[str, Any]:
    """A config file's top-level mapping, parsed as safe YAML; errors name the file."""
    source = str(path)
    try:
        size = Path(path).stat().st_size
        if size > MAX_CHARS:
            raise ConfigError(f"{source}: {size:,} bytes, more than the limit of {MAX_CHARS:,} for a config file")
        text = Path(path).read_text()
    except OSError as exc:
        raise ConfigError(f"cannot read config {source}: {exc.strerror or exc}") from exc
    try:
        data = safe_load(text)
    except YAMLLimitError as exc:
        raise ConfigError(f"{source}: {exc}") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{source}: not valid safe YAML ({str(exc).splitlines()[0]})") from exc
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: the top level must be a mapping")
    return data


def _apply_overrides(data: dict[str, Any], overrides: list[str] | None, prov: _Provenance,
                     removable: tuple[str, ...] = ()) -> dict[str, Any]:
    """``key.path=value`` overrides merged in (``prov`` records which keys each set; ``section.label=null``
    with ``section`` in ``removable`` removes that entry), then ``${...}`` interpolation resolved."""
    try:
        conf = OmegaConf.create(data)
        for item in overrides or []:
            key, value = parse_key_value(item, "override", ConfigError, empty=None)  # blank -> None
            parts = tuple(part.strip() for part in key.split("."))
            prov.overrides.append((parts, item))
            if value is None and len(parts) == 2 and parts[0] in removable:
                entries = conf.get(parts[0])
                if not isinstance(entries, DictConfig) or parts[1] not in entries:
                    present = sorted(entries) if isinstance(entries, DictConfig) else []
                    raise ConfigError(f"override {item!r}: there is no {parts[0]} entry {parts[1]!r} to remove "
                                      f"({parts[0]}: {', '.join(map(str, present)) or 'none'})")
                entries.pop(parts[1])
                prov.removed[parts] = item
                continue
            try:
                OmegaConf.update(conf, key, value, merge=True, force_add=True)
            except (OmegaConfBaseException, ValueError, TypeError) as exc:
                raise ConfigError(f"override {item!r}: {str(exc).splitlines()[0]}") from exc
        return OmegaConf.to_container(conf, resolve=True, throw_on_missing=True)  # type: ignore[return-value]
    except ConfigError:
        raise
    except MissingMandatoryValue as exc:
        key = exc.full_key or "a value"
        raise ConfigError(f"{prov.source}: {key} is mandatory and left unset (???) by the config: give it, e.g. "
                          f"`vcm run CONFIG {key}=VALUE`") from None
    except (OmegaConfBaseException, ValueError, TypeError) as exc:
        raise ConfigError(f"{prov.source}: {str(exc).splitlines()[0]}") from exc


def config_from_dict(data: dict[str, Any], overrides: list[str] | None = None, source: str = "config",
                     check_plugins: bool = True, config_dir: Path | None = None) -> RunConfig:
    """Validate an already-parsed config mapping (see :func:`load_config`).

    ``config_dir``: the folder relative paths of ``data`` are resolved against (None: left
    as they are, i.e. relative to the working directory).
    """
    prov = _Provenance(source)
    resolved = _apply_overrides(data, overrides, prov, removable=("codecs", "tasks"))
    _check_removed_anchors(resolved, prov)
    _expand_includes(resolved, prov, config_dir)
    if config_dir is not None:
        _resolve_paths(resolved, prov, config_dir)
    config = _validate(RunConfig, resolved, prov)
    if check_plugins:
        _check_plugin_params(config, prov)
    return config


def _check_removed_anchors(data: dict[str, Any], prov: _Provenance) -> None:
    """A codec removed by an override must not stay an anchor (the error names both)."""
    anchors = data.get("anchors")
    for anchor in anchors if isinstance(anchors, list) else []:
        item = prov.removed.get(("codecs", str(anchor)))
        if item is not None:
            rest = [str(a) for a in anchors if a != anchor]
            raise ConfigError(f"override {item!r} removes codec {anchor!r}, which is an anchor (anchors: "
                              f"[{', '.join(map(str, anchors))}]); remove it from the anchors as well, "
                              f"e.g. anchors=[{','.join(rest)}]")


def _is_path_parameter(cls: type, name: str) -> bool:
    """Whether ``cls``'s constructor parameter ``name`` is typed as a path (its annotation names ``Path``)."""
    try:
        parameter = inspect.signature(cls).parameters.get(name)
    except (TypeError, ValueError):
        return False
    return parameter is not None and "Path" in str(parameter.annotation)


def _resolve_paths(data: dict[str, Any], prov: _Provenance, config_dir: Path) -> None:
    """Relative paths written in the config file -> absolute, against ``config_dir`` (in place).

    Resolved: the dataset's string parameters typed as paths, ``weights.search_path``
    entries, ``published_anchors`` and ``cache``. Keys set by an override are left as given.
    """
    def absolute(value: Any, loc: tuple[Any, ...]) -> Any:
        if not isinstance(value, str) or not value or prov.override_for(loc) is not None:
            return value
        path = Path(value).expanduser()
        return value if path.is_absolute() else os.path.normpath(config_dir / path)

    dataset = data.get("dataset")
    if isinstance(dataset, dict) and isinstance(dataset.get("name"), str):
        from vcm_plugin.datasets.registry import get_dataset_class

        try:
            cls = get_dataset_class(dataset["name"])
        except VcmError:
            cls = None  # reported by the plugin checks
        for key, value in list(dataset.items()) if cls is not None else []:
            if key not in ("name", "max_images") and _is_path_parameter(cls, key):
                dataset[key] = absolute(value, ("dataset", key))
    if isinstance(data.get("cache"), str) and data["cache"] != CACHE_AUTO:
        data["cache"] = absolute(data["cache"], ("cache",))
    for section, key in (("weights", "search_path"), (None, "published_anchors")):  # lists of paths
        parent = data.get(section) if section else data
        if isinstance(parent, dict) and isinstance(parent.get(key), list):
            loc = (section, key) if section else (key,)
            parent[key] = [absolute(v, (*loc, i)) for i, v in enumerate(parent[key])]


def _expand_includes(data: Any, prov: _Provenance, config_dir: Path | None) -> None:
    """Replace ``include: anchors/X.yaml`` in codec entries by that anchor definition."""
    from vcm_plugin.anchors import AnchorError, load_anchor_definition, resolve_anchor_path

    codecs = data.get("codecs") if isinstance(data, dict) else None
    if not isinstance(codecs, dict):
        return
    for label, entry in codecs.items():
        if isinstance(entry, dict) and "include" in entry:
            try:
                base = load_anchor_definition(resolve_anchor_path(str(entry.pop("include")), config_dir))
            except AnchorError as exc:
                raise ConfigError(f"{prov.blame(('codecs', label, 'include'))}: codecs.{label}.include: "
                                  f"{exc}") from exc
            codecs[label] = {**base, **entry}


def load_model_config(path: str | Path, model: type[ModelT], overrides: list[str] | None = None) -> ModelT:
    """Load any pydantic-schema YAML config (e.g. a training config) with ``key=value`` overrides.

    Same rules as :func:`load_config`: safe YAML, OmegaConf interpolation, unknown keys
    named with the nearest valid one, errors naming the file.
    """
    prov = _Provenance(str(path))
    resolved = _apply_overrides(read_yaml_mapping(path), overrides, prov)
    return _validate(model, resolved, prov)


def dump_config(config: RunConfig) -> str:
    """The resolved config as YAML (written into the output folder)."""
    return yaml.safe_dump(config.model_dump(mode="json"), sort_keys=False)
