"""Training, run by ``vcm train [KIND] CONFIG [key=value ...]`` (:mod:`vcm_plugin.cli.train`).

Each kind is a trainer function ``(config_path, overrides, output, quiet) -> int`` (the
exit status) with a pydantic config schema; configs live in ``eval_configs/train/``.
KIND may be left out when the config names it (``kind: direct``). Trainers share
:mod:`vcm_plugin.training.checkpoints` (atomic checkpoints, resume after kill -9,
best-by-validation export).
"""

from __future__ import annotations

import importlib

from vcm_plugin.errors import InputError

#: kind -> "module:function"
TRAINERS: dict[str, str] = {
    "codec": "vcm_plugin.training.codec:train_from_config",
    "classifier": "vcm_plugin.training.classifier:train_from_config",
    "direct": "vcm_plugin.training.task_codec:train_direct",
    "feature": "vcm_plugin.training.task_codec:train_feature",
}


def run_trainer(kind: str, config: str, overrides: list[str], output: str | None, quiet: bool) -> int:
    """Dispatch to the trainer of ``kind``."""
    module_name, func_name = TRAINERS[kind].split(":")
    func = getattr(importlib.import_module(module_name), func_name)
    return int(func(config, overrides, output=output, quiet=quiet))


def kind_of_config(path: str) -> str:
    """The ``kind`` key of a training config (for ``vcm train CONFIG``)."""
    from vcm_plugin.config import read_yaml_mapping

    kind = read_yaml_mapping(path).get("kind")
    if kind not in TRAINERS:
        raise InputError(f"{path}: no valid `kind` key (one of {sorted(TRAINERS)}); give it as `vcm train KIND "
                         f"{path}` or add `kind:` to the config")
    return str(kind)
