"""Run configurations: YAML (loaded safely), ``key=value`` overrides, a validated schema.

A config names the dataset, the task models, the codecs with their qualities and
parameters, the anchors and the output folder::

    dataset: {name: coco, images: ${oc.env:VCM_SHARED,../shared}/data/coco/val2017, ...}
    tasks:   {detection: {model: yolov5, weights: yolov5n.pt}}
    codecs:  {vvc: {qualities: [42, 37, 32, 27], preset: medium}, jpeg: {qualities: [...]}}
    anchors: [vvc, jpeg]

Every codec/task entry is keyed by a label; ``codec:`` / ``model:`` default to the
label, other keys are the codec's or model's parameters and are checked against its
dataclass fields. Unknown or misspelled keys fail before any work, naming the key and
the nearest valid one. ``${oc.env:VAR,default}`` interpolation comes from OmegaConf;
YAML tags such as ``!!python/object`` are refused (a ``yaml.SafeLoader`` with YAML 1.2
numbers, so ``4:2:0`` stays a string). Relative paths
are relative to the working directory.
"""

from __future__ import annotations

import dataclasses
import difflib
import inspect
from pathlib import Path
from typing import Any, Literal, TypeVar

import yaml
from omegaconf import OmegaConf
from omegaconf.errors import OmegaConfBaseException
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from vcm_plugin.errors import VcmError
from vcm_plugin.safe_yaml import safe_load

ModelT = TypeVar("ModelT", bound=BaseModel)


class ConfigError(VcmError, ValueError):
    """A configuration file or override is invalid (names the file and the key)."""


class _Strict(BaseModel):
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
    task: Literal["detection", "segmentation", "classification"] | None = None


class CodecConfig(BaseModel):
    """A codec configuration: ``codec`` (default = the label), qualities, pre-scaling, parameters."""

    model_config = ConfigDict(extra="allow")
    codec: str | None = None
    qualities: list[float | int] = Field(min_length=1)
    scales: list[float] = Field(default_factory=lambda: [1.0])

    @field_validator("scales")
    @classmethod
    def _scales_in_range(cls, value: list[float]) -> list[float]:
        for s in value:
            if not 0 < s <= 1:
                raise ValueError(f"scale {s} must be in (0, 1]")
        return value


class WeightsConfig(_Strict):
    search_path: list[str] = Field(default_factory=list)


class ExecutorConfig(_Strict):
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


class RunConfig(_Strict):
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

    @model_validator(mode="after")
    def _anchors_are_codecs(self) -> RunConfig:
        for anchor in self.anchors:
            if anchor not in self.codecs:
                raise ValueError(f"anchor {anchor!r} is not one of the codecs {sorted(self.codecs)}")
        return self

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


def _valid_keys(model: type[BaseModel]) -> list[str]:
    return list(model.model_fields)


def _check_plugin_params(config: RunConfig, source: str) -> None:
    """Codec / task / dataset parameters must be fields of the registered class."""
    from vcm_plugin.codecs.registry import get_codec_class

    for label, entry in config.codecs.items():
        name, params = config.codec_params(label)
        cls = get_codec_class(name)
        _check_fields(cls, params, f"{source}: codecs.{label}", extra=["codec", "qualities", "scales"])
        for q in entry.qualities:
            cls.quality_range.validate(q, name)
    from vcm_plugin.tasks.registry import get_task_model_class

    for label in config.tasks:
        name, params = config.task_params(label)
        _check_fields(get_task_model_class(name), params, f"{source}: tasks.{label}", extra=["model", "task"])
    from vcm_plugin.datasets.registry import get_dataset_class

    _check_fields(get_dataset_class(config.dataset.name), dict(config.dataset.model_extra or {}),
                  f"{source}: dataset", extra=["name", "max_images"])


def _check_fields(cls: type, params: dict[str, Any], where: str, extra: list[str]) -> None:
    if dataclasses.is_dataclass(cls):
        valid = [f.name for f in dataclasses.fields(cls) if f.init]
    else:
        signature = inspect.signature(cls)
        if any(p.kind is p.VAR_KEYWORD for p in signature.parameters.values()):
            return
        valid = list(signature.parameters)
    for key in params:
        if key not in valid:
            raise ConfigError(f"{where}: unknown key {key!r}{_nearest(key, valid + extra)}")


def _format_validation_error(exc: ValidationError, source: str, root: type[BaseModel] | None = None) -> str:
    parts = []
    for err in exc.errors():
        loc = ".".join(str(p) for p in err["loc"])
        if err["type"] == "extra_forbidden":
            parent: type[BaseModel] = root or RunConfig
            for p in err["loc"][:-1]:
                field = parent.model_fields.get(str(p))
                ann = getattr(field, "annotation", None)
                if isinstance(ann, type) and issubclass(ann, BaseModel):
                    parent = ann
            key = str(err["loc"][-1])
            parts.append(f"unknown key {loc!r}{_nearest(key, _valid_keys(parent))}")
        elif err["type"] == "missing":
            parts.append(f"missing key {loc!r}")
        else:
            parts.append(f"{loc or 'config'}: {err['msg']}")
    return f"{source}: " + "; ".join(parts)


def parse_override(item: str) -> tuple[str, Any]:
    """``a.b.c=value`` -> (``a.b.c``, YAML-safe-parsed value)."""
    key, sep, value = item.partition("=")
    if not sep or not key.strip():
        raise ConfigError(f"override {item!r}: expected key=value")
    try:
        return key.strip(), safe_load(value) if value.strip() else None
    except yaml.YAMLError as exc:
        raise ConfigError(f"override {item!r}: cannot parse the value ({exc})") from exc


def load_config(path: str | Path, overrides: list[str] | None = None, check_plugins: bool = True) -> RunConfig:
    """Load, override, interpolate and validate a run config; errors name file and key."""
    return config_from_dict(read_yaml_mapping(path), overrides, str(path), check_plugins,
                            config_dir=Path(path).resolve().parent)


def read_yaml_mapping(path: str | Path) -> dict[str, Any]:
    """A config file's top-level mapping, parsed as safe YAML; errors name the file."""
    source = str(path)
    try:
        text = Path(path).read_text()
    except OSError as exc:
        raise ConfigError(f"cannot read config {source}: {exc.strerror or exc}") from exc
    try:
        data = safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"{source}: not valid safe YAML ({str(exc).splitlines()[0]})") from exc
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: the top level must be a mapping")
    return data


def apply_overrides(data: dict[str, Any], overrides: list[str] | None, source: str) -> dict[str, Any]:
    """``key.path=value`` overrides merged in, then ``${...}`` interpolation resolved."""
    try:
        conf = OmegaConf.create(data)
        for item in overrides or []:
            key, value = parse_override(item)
            try:
                OmegaConf.update(conf, key, value, merge=True, force_add=True)
            except (OmegaConfBaseException, ValueError, TypeError) as exc:
                raise ConfigError(f"{source}: override {item!r}: {str(exc).splitlines()[0]}") from exc
        return OmegaConf.to_container(conf, resolve=True)  # type: ignore[return-value]
    except ConfigError:
        raise
    except (OmegaConfBaseException, ValueError, TypeError) as exc:
        raise ConfigError(f"{source}: {str(exc).splitlines()[0]}") from exc


def config_from_dict(data: dict[str, Any], overrides: list[str] | None = None, source: str = "config",
                     check_plugins: bool = True, config_dir: Path | None = None) -> RunConfig:
    """Validate an already-parsed config mapping (see :func:`load_config`)."""
    resolved = apply_overrides(data, overrides, source)
    _expand_includes(resolved, source, config_dir)
    try:
        config = RunConfig.model_validate(resolved)
    except ValidationError as exc:
        raise ConfigError(_format_validation_error(exc, source)) from None
    if check_plugins:
        _check_plugin_params(config, source)
    return config


def _expand_includes(data: Any, source: str, config_dir: Path | None) -> None:
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
                raise ConfigError(f"{source}: codecs.{label}.include: {exc}") from exc
            codecs[label] = {**base, **entry}


def load_model_config(path: str | Path, model: type[ModelT], overrides: list[str] | None = None) -> ModelT:
    """Load any pydantic-schema YAML config (e.g. a training config) with ``key=value`` overrides.

    Same rules as :func:`load_config`: safe YAML, OmegaConf interpolation, unknown keys
    named with the nearest valid one, errors naming the file.
    """
    source = str(path)
    resolved = apply_overrides(read_yaml_mapping(path), overrides, source)
    try:
        return model.model_validate(resolved)
    except ValidationError as exc:
        raise ConfigError(_format_validation_error(exc, source, model)) from None


def dump_config(config: RunConfig) -> str:
    """The resolved config as YAML (written into the output folder)."""
    return yaml.safe_dump(config.model_dump(mode="json"), sort_keys=False)
