"""Grid training (``vcm train CONFIG [key=value ...] --grid Q:LMBDA:STEPS ...``): one run per point, resumable.

Each point trains as ``vcm train CONFIG key=value ... lmbda=LMBDA steps=STEPS`` would, ``{quality}``
in the overrides and the output folder replaced by Q (e.g. ``output=runs/q{quality}``). A point whose
folder holds ``result.json`` (written last) is skipped; any other resumes from its ``last.pt``.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from vcm_plugin.errors import InputError
from vcm_plugin.training import run_trainer
from vcm_plugin.training.loop import RESULT

logger = logging.getLogger(__name__)
QUALITY = "{quality}"


def grid_point(text: str) -> tuple[int, float, int]:
    """``"Q:LMBDA:STEPS"`` (e.g. ``"2:2.5:120"``) as (quality, lambda, steps); :class:`InputError` naming it."""
    try:
        quality, lmbda, steps = text.split(":")
        return int(quality), float(lmbda), int(steps)
    except ValueError:
        raise InputError(f"grid point {text!r} is not QUALITY:LMBDA:STEPS (e.g. 2:2.5:120)") from None


def train_grid(kind: str, config: str, points: Sequence[tuple[int, float, int]], overrides: Sequence[str] = (),
               output: str | None = None) -> list[dict[str, Any]]:
    """Train ``config`` (trainer ``kind``) at every (quality, lambda, steps) point in order; each ``result.json``.

    A point's output folder is ``output`` (or the ``output=`` override) with ``{quality}`` replaced by its quality.
    """
    given = [o.split("=", 1)[1] for o in overrides if o.startswith("output=")]
    template = output or (given[-1] if given else None)
    if template is None or (len(points) > 1 and QUALITY not in template):
        raise InputError(f"a training grid needs the output folder of each point: --output or output=... "
                         f"containing {QUALITY} (got {template!r})")
    if not points or len({q for q, _, _ in points}) < len(points):
        raise InputError(f"grid qualities {[q for q, _, _ in points]}: need at least one, each once")
    results = []
    for quality, lmbda, steps in points:
        folder = Path(template.replace(QUALITY, str(quality)))
        if (folder / RESULT).is_file():
            logger.info(f"grid point q{quality}: {folder / RESULT} exists, skipped")
            results.append(json.loads((folder / RESULT).read_text()))
            continue
        logger.info(f"grid point q{quality}: lmbda={lmbda} steps={steps} -> {folder}")
        mine = [o.replace(QUALITY, str(quality)) for o in overrides if not o.startswith("output=")]
        results.append(run_trainer(kind, config, [*mine, f"lmbda={lmbda}", f"steps={steps}", f"output={folder}"]))
    return results
