"""Harness overhead (quickstart, one job) and the speed-up of `--jobs 2` on a codec-dominated grid.

(a) The wall time of a fresh `vcm run` of the quickstart with one job divided by the summed codec + model
seconds of its units (encode + decode + inference, as stored; goal: at most 1.05), and where the rest went:
before the first unit (dataset, keys, preflight with the model load, store, manifest), per unit outside the
codec and the model (picture read, image metrics, hashes), between units (store writes, the per-point
lines with their COCOeval) and after the last (reports).
(b) The speed-up of `--jobs 2` over `--jobs 1` on a codec-dominated grid (VVC on the 6 sample COCO pictures,
the image-quality task: no model) with each worker's busy seconds and the share of the workers' time left idle:
with `threads: 1` in the config, so that a unit is the same work in both runs (goal: at least 1.8x on 2
cores), and with libvvenc's default threads, which with one job already keep about 1.3 of 2 cores busy
(the speed-up a user sees; for information).

Every run goes into a fresh temporary folder with the shared unit cache off (`cache: null`): a cached unit
costs no codec or model time and would make (a) meaningless. Run:
`.venv/bin/python benchmarks/harness_overhead.py` (`--config`, `key=value` overrides of it, `--skip-jobs`).
"""

from __future__ import annotations

import argparse
import sqlite3
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from small_pictures import load as machine_load

from vcm_plugin.config import RunConfig, config_from_dict, load_config
from vcm_plugin.pipeline.run import RunSummary, run
from vcm_plugin.results.tables import STORE_NAME

ROOT = Path(__file__).resolve().parents[1]
QUICKSTART = ROOT / "eval_configs" / "quickstart.yaml"


@dataclass
class Timed:
    """A fresh run: wall seconds, summed codec + model seconds, units, and the run's summary."""

    wall: float
    work: float
    units: int
    summary: RunSummary

    @property
    def ratio(self) -> float:
        return self.wall / self.work if self.work else float("inf")

    @property
    def ratio_with_metrics(self) -> float:
        """wall / (codec + model + image-metric seconds): the image metrics (PSNR, MS-SSIM of every decoded
        picture) are per-unit results too, but not in the stored seconds."""
        work = self.work + self.summary.load.metrics_s
        return self.wall / work if work else float("inf")

    def where(self) -> str:
        """Where the seconds that are not codec or model went."""
        s, load = self.summary, self.summary.load
        busy = sum(load.busy.values())
        per_unit = busy - self.work if s.workers == 1 else None  # the workers' own time outside codec and model
        between = load.wall_s - busy if s.workers == 1 else load.wall_s - busy / s.workers
        parts = [f"before the units {s.setup_s:.1f} s", f"reports {s.reports_s:.1f} s"]
        if per_unit is not None:
            parts.append(f"per unit outside codec + model {per_unit:.1f} s (image metrics {load.metrics_s:.1f} s)")
        parts.append(f"between units {max(between, 0.0):.1f} s")
        return ", ".join(parts)

    def workers(self) -> str:
        """Each worker's busy seconds and share of the executor's wall time; the idle share."""
        load = self.summary.load
        cells = [f"{name.rsplit(':', 1)[-1]} {s:.1f} s ({100 * s / load.wall_s:.0f} %)" for name, s in
                 sorted(load.busy.items())] if load.wall_s else []
        idle = load.idle_share(self.summary.workers)
        return f"busy: {', '.join(cells)}; idle {100 * idle:.0f} % of {self.summary.workers} x {load.wall_s:.1f} s" \
            if idle is not None else "no unit ran"


def fresh_run(config: RunConfig, jobs: int) -> Timed:
    """Run ``config`` with ``jobs`` workers into a fresh temporary folder, the shared unit cache off."""
    config = config.model_copy(update={"cache": None})
    with tempfile.TemporaryDirectory() as out:
        start = time.perf_counter()
        summary = run(config, output=out, jobs=jobs, quiet=True)
        wall = time.perf_counter() - start
        work, units = work_seconds(Path(out))
    return Timed(wall, work, units, summary)


def work_seconds(folder: Path) -> tuple[float, int]:
    """(summed encode + decode + inference seconds, units) of the run in ``folder``, as stored."""
    db = sqlite3.connect(folder / STORE_NAME)
    try:
        # encode/decode happen once per (point, image) and are stored on each task row: count them once
        coded = db.execute("SELECT SUM(e) FROM (SELECT MAX(COALESCE(encode_s,0)+COALESCE(decode_s,0)) AS e "
                           "FROM units GROUP BY codec, quality, scale, image_id)").fetchone()[0] or 0.0
        inference, units = db.execute("SELECT SUM(inference_s), COUNT(*) FROM units").fetchone()
    finally:
        db.close()
    return coded + (inference or 0.0), units


def overhead(config_path: Path = QUICKSTART, overrides: list[str] | None = None) -> Timed:
    """(a): a fresh one-job run of ``config_path`` (default: the quickstart)."""
    return fresh_run(load_config(config_path, overrides or []), 1)


def codec_grid(images: int = 6, qualities: tuple[int, ...] = (32, 42), threads: int | None = None) -> RunConfig:
    """The codec-dominated grid of (b): VVC on the embedded sample's COCO pictures, image-quality task; ``threads``
    None: libvvenc's default (with one job it uses about 2 cores on a 2-core machine), else that many in every run."""
    from vcm_plugin.pipeline import compare  # noqa: F401 - registers the image-files dataset
    from vcm_plugin.sample import coco_images_dir

    paths = [str(p) for p in sorted(coco_images_dir().glob("*.jpg"))[:images]]
    return config_from_dict({"name": "jobs-grid", "cache": None, "dataset": {"name": "image-files", "paths": paths},
                             "tasks": {"image-quality": {}},
                             "codecs": {"vvc": {"qualities": list(qualities),
                                                **({} if threads is None else {"threads": threads})}}},
                            source="benchmarks/harness_overhead.py")


def jobs_speedup(config: RunConfig | None = None, jobs: int = 2) -> tuple[Timed, Timed]:
    """(b): fresh runs of ``config`` (default: :func:`codec_grid`) with one job and with ``jobs``."""
    config = config or codec_grid()
    return fresh_run(config, 1), fresh_run(config, jobs)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default=str(QUICKSTART))
    parser.add_argument("--skip-jobs", action="store_true", help="only (a)")
    parser.add_argument("overrides", nargs="*")
    args = parser.parse_args()
    print(f"machine: {machine_load()}")
    a = overhead(Path(args.config), args.overrides)
    print(f"(a) jobs 1: {a.units} units, wall {a.wall:.1f} s, codec + model {a.work:.1f} s, wall / work = "
          f"{a.ratio:.3f} (goal <= 1.05); with the image metrics as work {a.ratio_with_metrics:.3f}; the rest: "
          f"{a.where()}")
    if not args.skip_jobs:
        for threads, goal in ((1, " (goal >= 1.8x)"), (None, "")):
            one, two = jobs_speedup(codec_grid(threads=threads))
            what = "threads: 1" if threads else "default threads"
            print(f"(b) codec grid, VVC {what} ({one.units} units): jobs 1 wall {one.wall:.1f} s, jobs 2 wall "
                  f"{two.wall:.1f} s, speed-up {one.wall / two.wall:.2f}x{goal}; jobs 2 {two.workers()}")
    print(f"machine at the end: {machine_load()}")


if __name__ == "__main__":
    main()
