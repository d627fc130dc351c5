"""``vcm run --fill-overlap``: run a config, then the qualities its n/a BD-rates need to overlap.

After the run, every BD-rate that is n/a because the curves overlap too little proposes qualities
(:func:`vcm_plugin.reports.overlap.propose`); they are added to the codec entries and the config is run
again into the same folder: the finished units are skipped (their keys are in the store), so only the
new qualities' units are computed, and the reports are rewritten. At most ``rounds`` times.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from vcm_plugin.config import RunConfig
from vcm_plugin.pipeline.run import RunSummary, run


def added_qualities(config: RunConfig, folder: Path) -> dict[str, list[float | int]]:
    """Codec label -> qualities proposed by the BD-rates of the run in ``folder`` that lack overlap."""
    from vcm_plugin.reports.write import bd_rows
    from vcm_plugin.results import load

    added: dict[str, list[float | int]] = {}
    for row in bd_rows(config, load(folder).points):
        if row.proposal:
            label, qualities = row.proposal
            have = set(map(float, config.codecs[label].qualities)) | set(map(float, added.get(label, [])))
            added.setdefault(label, []).extend(q for q in qualities if float(q) not in have)
    return {label: sorted(qs) for label, qs in added.items() if qs}


def run_filling_overlap(config: RunConfig, output: str | Path | None = None, jobs: int | None = None,
                        quiet: bool = False, log: Callable[[str], None] = print, rounds: int = 2) -> RunSummary:
    """:func:`~vcm_plugin.pipeline.run.run`, then up to ``rounds`` reruns with the proposed qualities added."""
    summary = run(config, output=output, jobs=jobs, quiet=quiet, log=log)
    for _ in range(rounds):
        added = added_qualities(config, summary.output)
        if not added:
            break
        log("--fill-overlap: adding " + "; ".join(f"{label} qualities {', '.join(map(str, qs))}"
                                                 for label, qs in added.items()))
        config = config.model_copy(deep=True)
        for label, qualities in added.items():
            config.codecs[label].qualities = sorted([*config.codecs[label].qualities, *qualities])
        again = run(config, output=summary.output, jobs=jobs, quiet=quiet, log=log)
        again.units_failed += summary.units_failed
        again.units_from_cache += summary.units_from_cache
        summary = again
    return summary
