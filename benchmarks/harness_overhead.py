"""Harness overhead and parallel speed-up on the quickstart grid.

Prints (a) the total wall time of a fresh `vcm run` with one job divided by the summed
codec + model seconds of the same units (encode + decode + inference, as stored; the
goal is at most 1.05), and (b) the speed-up of `--jobs 2` over `--jobs 1` (fresh
output folders each time). Run: `.venv/bin/python benchmarks/harness_overhead.py`.
"""

from __future__ import annotations

import argparse
import sqlite3
import tempfile
import time
from pathlib import Path

from vcm_plugin.config import load_config
from vcm_plugin.pipeline.run import run
from vcm_plugin.results.tables import STORE_NAME

ROOT = Path(__file__).resolve().parents[1]


def timed_run(config_path: Path, jobs: int, overrides: list[str]) -> tuple[float, float, int]:
    """(wall seconds, summed encode+decode+inference seconds, units) of a fresh run."""
    with tempfile.TemporaryDirectory() as out:
        config = load_config(config_path, overrides)
        start = time.perf_counter()
        run(config, output=out, jobs=jobs, quiet=True)
        wall = time.perf_counter() - start
        db = sqlite3.connect(Path(out) / STORE_NAME)
        # encode/decode happen once per (point, image) and are stored on each task row: count them once
        coded = db.execute("SELECT SUM(e) FROM (SELECT MAX(COALESCE(encode_s,0)+COALESCE(decode_s,0)) AS e "
                           "FROM units GROUP BY codec, quality, scale, image_id)").fetchone()[0] or 0.0
        inference, units = db.execute("SELECT SUM(inference_s), COUNT(*) FROM units").fetchone()
        db.close()
    return wall, coded + (inference or 0.0), units


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default=str(ROOT / "eval_configs" / "quickstart.yaml"))
    parser.add_argument("overrides", nargs="*")
    args = parser.parse_args()
    wall1, work1, units = timed_run(Path(args.config), 1, args.overrides)
    print(f"jobs 1: {units} units, wall {wall1:.1f} s, codec + model {work1:.1f} s, "
          f"(a) wall / work = {wall1 / work1:.3f} (goal <= 1.05)")
    wall2, work2, _ = timed_run(Path(args.config), 2, args.overrides)
    print(f"jobs 2: wall {wall2:.1f} s, codec + model {work2:.1f} s, (b) speed-up over jobs 1 = {wall1 / wall2:.2f}x")


if __name__ == "__main__":
    main()
