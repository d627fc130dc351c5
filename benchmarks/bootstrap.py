"""Time of the BD-rate bootstrap of a run's reports (target: 1,000 resamples of coco_shared in < 60 s on 2 cores).

Loads the run folder (default ``outputs/coco_shared``, from `vcm run eval_configs/coco_shared.yaml`):
the points are aggregated once (COCOeval per point, not timed), then the timed part is what the reports
add: every complete point re-accumulated on B image resamples and each BD-rate row's B values and
interval. Prints the time, the points and images, and the BD-rate rows with their intervals.
Run: `.venv/bin/python benchmarks/bootstrap.py [FOLDER] [--bootstrap B] [--seed S]`.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from vcm_plugin.reports.intervals import draw_points
from vcm_plugin.reports.write import bd_rows, format_bd_table
from vcm_plugin.results import load

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folder", nargs="?", default=str(ROOT / "outputs" / "coco_shared"))
    parser.add_argument("--bootstrap", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    started = time.perf_counter()
    results = load(args.folder)
    loaded = time.perf_counter() - started
    points = [p for p in results.points if p.per_image is not None]
    started = time.perf_counter()
    draws = draw_points(results.points, args.bootstrap, args.seed)
    drawn = time.perf_counter() - started
    rows = bd_rows(results.config, results.points, draws)
    total = time.perf_counter() - started
    incomplete = sum(not p.complete for p in results.points)
    print(f"{args.folder}: {len(points)} complete points ({incomplete} incomplete), {draws.n_images} images; "
          f"aggregation (not timed) {loaded:.1f} s")
    print(f"bootstrap B = {args.bootstrap}: points re-accumulated in {drawn:.1f} s, with {len(rows)} BD-rate rows "
          f"{total:.1f} s")
    print(format_bd_table(rows))


if __name__ == "__main__":
    main()
