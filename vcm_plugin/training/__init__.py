"""Training, run by ``vcm train [KIND] CONFIG [key=value ...]`` (:mod:`vcm_plugin.cli.train`).

Each kind is a :class:`~vcm_plugin.training.loop.Trainer` (the one loop with hooks) with a
pydantic config schema (``Config``; configs in ``eval_configs/train/``, KIND may come from their
``kind:``), run by :func:`run_trainer`; :mod:`~vcm_plugin.training.grid` trains several points.
"""

from __future__ import annotations

import logging
import pkgutil
import shlex
from pathlib import Path
from typing import Any

from vcm_plugin.errors import InputError

logger = logging.getLogger(__name__)

#: kind -> "module:Trainer class" (its ``Config`` is the config schema)
TRAINERS: dict[str, str] = {
    "codec": "vcm_plugin.training.codec:CodecTrainer",
    "classifier": "vcm_plugin.training.classifier:ClassifierTrainer",
    "direct": "vcm_plugin.training.task_codec:TaskCodecTrainer",
    "feature": "vcm_plugin.training.task_codec:TaskCodecTrainer",
}


def run_trainer(kind: str, config_path: str, overrides: list[str], output: str | None = None) -> dict[str, Any]:
    """Train ``kind`` as the config file and its ``key=value`` overrides say (``output``: another folder); the
    ``result.json`` record. Progress and info lines follow the ``vcm_plugin`` log level."""
    from vcm_plugin.config import load_model_config
    from vcm_plugin.training.loop import TrainingError

    trainer = pkgutil.resolve_name(TRAINERS[kind])
    config = load_model_config(config_path, trainer.Config, overrides)
    if config.kind not in (None, kind):
        raise TrainingError(f"{config_path}: kind {config.kind!r} in the config, but `vcm train {kind}` was run")
    config = config.model_copy(update={"kind": kind, **({"output": output} if output is not None else {})})
    command = shlex.join(["vcm", "train", kind, str(config_path), *overrides, *(["-o", output] if output else [])])
    result = trainer(config, command).train()
    logger.info(f"{kind} training done (best step {result['best_step']}): {Path(config.output) / 'result.json'}")
    return result


def kind_of_config(path: str) -> str:
    """The ``kind`` key of a training config (for ``vcm train CONFIG``)."""
    from vcm_plugin.config import read_yaml_mapping

    kind = read_yaml_mapping(path).get("kind")
    if kind not in TRAINERS:
        raise InputError(f"{path}: no valid `kind` key (one of {sorted(TRAINERS)}); give it as `vcm train KIND "
                         f"{path}` or add `kind:` to the config")
    return str(kind)
