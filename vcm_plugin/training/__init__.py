"""Training: ``vcm train [KIND] CONFIG [key=value ...]``.

Each kind is a trainer function ``(config_path, overrides, output, quiet) -> int`` (the
exit status) with a pydantic config schema; configs live in ``eval_configs/train/``.
KIND may be left out when the config names it (``kind: direct``). Trainers share
:mod:`vcm_plugin.training.checkpoints` (atomic checkpoints, resume after kill -9,
best-by-validation export).
"""

from __future__ import annotations

import argparse
import importlib

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
    from vcm_plugin.cli import CLIError
    from vcm_plugin.config import read_yaml_mapping

    kind = read_yaml_mapping(path).get("kind")
    if kind not in TRAINERS:
        raise CLIError(f"{path}: no valid `kind` key (one of {sorted(TRAINERS)}); give it as `vcm train KIND "
                       f"{path}` or add `kind:` to the config")
    return str(kind)


def _dispatch(args: argparse.Namespace) -> int:
    words = list(args.words)
    if words[0] in TRAINERS:
        kind = words.pop(0)
        if not words:
            from vcm_plugin.cli import CLIError

            raise CLIError(f"vcm train {kind}: missing the CONFIG file")
    else:
        kind = kind_of_config(words[0])
    return run_trainer(kind, words[0], words[1:], args.output, args.quiet)


def add_train_parser(sub: argparse._SubParsersAction) -> None:
    """Register ``vcm train``."""
    p = sub.add_parser("train", help="train a learned codec, task codec or classifier from a YAML config (resumable)",
                       description=f"vcm train [KIND] CONFIG [KEY=VALUE ...]; KIND one of {sorted(TRAINERS)} "
                                   "(default: the config's `kind`)")
    p.add_argument("words", nargs="+", metavar="[KIND] CONFIG [KEY=VALUE]",
                   help="what to train (optional when the config has `kind:`), the YAML config, overrides")
    p.add_argument("--output", "-o", help="output folder (default: the config's `output`)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=_dispatch)
