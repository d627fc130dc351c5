"""The report formats of a run, written from its results store alone (``vcm run`` at its end, ``vcm report``).

- ``default``: :func:`vcm_plugin.reports.write.write_reports` (results.csv, BD-rate tables, RD plots, failures);
- ``cttc``: :func:`vcm_plugin.reports.cttc.write_cttc` (the MPEG FCM CTTC template's CSV / XLSX under ``cttc/``).

A config chooses them with ``report: {formats: [default, cttc]}`` (default: ``[default]``).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

from vcm_plugin.config import RunConfig
from vcm_plugin.datasets.base import Dataset
from vcm_plugin.reports.write import ReportError
from vcm_plugin.results import Point, PointLabel, load
from vcm_plugin.results.tables import task_name

FORMATS = ("default", "cttc")


def _tasks(config: RunConfig) -> dict[str, str]:
    return {label: task_name(config, label) for label in config.tasks}


def check_report_formats(config: RunConfig, formats: Sequence[str] | None = None) -> None:
    """Refuse, before any work, a format that cannot be written for this run (e.g. CTTC on classification)."""
    from vcm_plugin.reports.cttc import check_cttc_coverage

    if "cttc" in (formats or config.report.formats):
        check_cttc_coverage(config, _tasks(config), where=f"config {config.name!r} (report.formats: cttc)")


def write_report_formats(config: RunConfig, dataset: Dataset, folder: Path, formats: Sequence[str] | None = None,
                         log: Callable[[str], None] | None = print,
                         known: dict[PointLabel, Point] | None = None) -> dict[str, Path]:
    """Write the reports of ``formats`` (default: the config's ``report.formats``) for the run in ``folder``.

    The points are aggregated once (``known``: points already aggregated) and shared by every format.
    """
    from vcm_plugin.reports.cttc import write_cttc
    from vcm_plugin.reports.write import write_reports

    formats = list(formats or config.report.formats)
    if unknown := [f for f in formats if f not in FORMATS]:
        raise ReportError(f"unknown report format {unknown[0]!r}; valid: {', '.join(FORMATS)}")
    points = load(folder, dataset=dataset, known=known).points
    known = {p.label: p for p in points}
    paths: dict[str, Path] = {}
    if "default" in formats:
        paths.update(write_reports(config, dataset, folder, log=log, known=known))
    if "cttc" in formats:
        try:
            paths.update(write_cttc(config, points, folder, _tasks(config)))
        except OSError as exc:  # full disk, read-only folder: the store is intact
            raise ReportError(f"cannot write the CTTC report into {folder / 'cttc'}: {exc.strerror or exc}") from exc
        if log is not None:
            log(f"CTTC template: {len([k for k in paths if k.startswith('cttc_') and not k.endswith('_xlsx')])} "
                f"table(s) in {folder / 'cttc'}")
    return paths
