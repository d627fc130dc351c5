"""Training: ``vcm train KIND CONFIG [key=value ...]``.

Each kind is a trainer module exposing ``train_from_config(config_path, overrides,
output, quiet) -> int`` (the exit status) and a pydantic config schema; configs live
in ``eval_configs/train/``. Trainers share :mod:`vcm_plugin.training.checkpoints`
(atomic checkpoints, resume after kill -9, best-by-validation export).
"""

from __future__ import annotations

import argparse
import importlib

#: kind -> "module:function"; later kinds (feature / direct codecs) add themselves here.
TRAINERS: dict[str, str] = {
    "codec": "vcm_plugin.training.codec:train_from_config",
    "classifier": "vcm_plugin.training.classifier:train_from_config",
}


def run_trainer(kind: str, config: str, overrides: list[str], output: str | None, quiet: bool) -> int:
    """Dispatch to the trainer of ``kind``."""
    module_name, func_name = TRAINERS[kind].split(":")
    func = getattr(importlib.import_module(module_name), func_name)
    return int(func(config, overrides, output=output, quiet=quiet))


def add_train_parser(sub: argparse._SubParsersAction) -> None:
    """Register ``vcm train``."""
    p = sub.add_parser("train", help="train a learned codec or a classifier from a YAML config (resumable)")
    p.add_argument("kind", choices=sorted(TRAINERS), help="what to train")
    p.add_argument("config", help="YAML training config (see eval_configs/train/)")
    p.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="config overrides, e.g. steps=200")
    p.add_argument("--output", "-o", help="output folder (default: the config's `output`)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=lambda args: run_trainer(args.kind, args.config, args.overrides, args.output, args.quiet))
