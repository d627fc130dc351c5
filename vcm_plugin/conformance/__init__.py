"""What works here and whether a codec keeps its contract: the conformance kit of ``vcm check-codec``
(:mod:`.codec`) and the environment report of ``vcm doctor`` (:mod:`.environment`).

It sits beside :mod:`vcm_plugin.splitting` in the layers: it checks every codec, the task-aware ones
included (their decoded :class:`~vcm_plugin.tasks.split.CutValue` must be accepted by the task model).
"""

from __future__ import annotations

from vcm_plugin.conformance.codec import CHECKS, CheckResult, ConformanceReport, check_codec
from vcm_plugin.conformance.environment import EnvironmentItem, environment_report

__all__ = ["CHECKS", "CheckResult", "ConformanceReport", "EnvironmentItem", "check_codec", "environment_report"]
