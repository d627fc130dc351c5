"""Scale-out of `vcm run` on Dask: the overhead per image of shards on a LocalCluster, and 2 workers over 1.

One grid (the embedded sample's 6 COCO images, YOLOv5n, JPEG at 6 qualities + the reference: 42 units) runs
with the local in-process executor, then on a Dask ``LocalCluster`` of single-threaded worker processes, each
into a fresh folder with the shared unit cache off (the local run first, so that imports and the first model
load are not counted against Dask). Printed per Dask run: wall seconds, the start (cluster start and the
workers' set-up, their model loads included) and the stop (closing the cluster), each once per run whatever
its size, and, for one worker, the overhead per image beyond them: the run's seconds that are not codec or
model time (stored encode + decode + inference; the Dask worker runs torch on one thread, the in-process run
on all cores), less the local run's, per image:
``((dask wall - start - stop - dask work) - (local wall - local work)) / images``
(goal: under 20 ms with the default ``shard_size``); then the speed-up of 2 workers over 1 and the round trip
of an empty Dask task (submit -> result, ms, on 500 tasks).

Run: `.venv/bin/python benchmarks/scaling.py` (needs ../shared/weights or $VCM_SHARED;
`--shard-sizes 1,8`, `--no-two`).
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from harness_overhead import work_seconds

from vcm_plugin.config import ExecutorConfig, config_from_dict
from vcm_plugin.pipeline.run import RunSummary, run

DEFAULT_SHARD_SIZE = ExecutorConfig().shard_size


def grid(output: Path, executor: dict) -> dict:
    shared = Path(os.environ.get("VCM_SHARED", Path(__file__).resolve().parents[2] / "shared"))
    return {"name": "scaling", "output": str(output), "jobs": 1, "cache": None,
            "dataset": {"name": "sample", "max_images": 6},
            "tasks": {"detection": {"model": "yolov5", "weights": "yolov5n.pt"}},
            "weights": {"search_path": [str(shared / "weights")]},
            "codecs": {"jpeg": {"qualities": [5, 10, 20, 35, 55, 80]}}, "anchors": ["jpeg"],
            "executor": executor}


@dataclass
class Timed:
    """A run of the grid: wall seconds, its start (Dask: cluster and workers), codec + model seconds, units."""

    workers: int
    shard_size: int
    wall: float
    start: float
    stop: float
    work: float
    images: int

    @property
    def rest(self) -> float:
        """Seconds that were neither the start, the stop nor codec or model time."""
        return self.wall - self.start - self.stop - self.work

    def per_image_ms(self, local: Timed) -> float:
        """Overhead per image beyond the start, against the local in-process run of the same grid."""
        return 1e3 * (self.rest - local.rest) / self.images


def timed(output: Path, executor: dict) -> Timed:
    start = time.perf_counter()
    summary: RunSummary = run(config_from_dict(grid(output, executor)), quiet=True)
    wall = time.perf_counter() - start
    work, _ = work_seconds(output)
    return Timed(executor.get("workers", 1), executor.get("shard_size", 0), wall, summary.load.start_s,
                 summary.load.stop_s, work, summary.units_computed)


def local_and_dask(root: Path, shard_sizes: list[int], workers: list[int]) -> tuple[Timed, list[Timed]]:
    """The local in-process run of the grid (after an untimed one: imports, the first model load), and a Dask run
    per (workers, shard size)."""
    timed(root / "warm-up", {"kind": "local"})
    local = timed(root / "local", {"kind": "local"})
    runs = [timed(root / f"dask-{n}-{size}", {"kind": "dask", "cluster": "local", "workers": n, "shard_size": size})
            for n in workers for size in shard_sizes]
    return local, runs


def empty_task_ms(n: int = 500) -> float:
    from dask.distributed import Client, LocalCluster

    with LocalCluster(n_workers=1, threads_per_worker=1, processes=True, dashboard_address=None) as cluster, \
            Client(cluster) as client:
        client.submit(int, 0).result()  # warm
        start = time.perf_counter()
        for i in range(n):
            client.submit(int, i, pure=False).result()
        return 1e3 * (time.perf_counter() - start) / n


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shard-sizes", default=f"1,{DEFAULT_SHARD_SIZE}")
    parser.add_argument("--no-two", action="store_true", help="1 worker only (no speed-up)")
    args = parser.parse_args()
    sizes = [int(s) for s in args.shard_sizes.split(",")]
    one, five, fifteen = os.getloadavg()
    print(f"machine: {os.cpu_count()} cores, load average {one:.2f} {five:.2f} {fifteen:.2f}")
    with tempfile.TemporaryDirectory() as tmp:
        local, runs = local_and_dask(Path(tmp), sizes, [1] if args.no_two else [1, 2])
    print(f"grid: {local.images} units; local in-process {local.wall:.1f} s (codec + model {local.work:.1f} s)")
    print("| workers | shard_size | wall s | start s | stop s | codec + model s | overhead per image beyond start "
          "and stop, ms |\n|---|---|---|---|---|---|---|")
    for r in runs:
        per_image = f"{r.per_image_ms(local):.0f}" if r.workers == 1 else "-"
        print(f"| {r.workers} | {r.shard_size} | {r.wall:.1f} | {r.start:.1f} | {r.stop:.1f} | {r.work:.1f} | "
              f"{per_image} |")
    by = {(r.workers, r.shard_size): r for r in runs}
    for size in sizes:
        if (2, size) in by:
            speedup = by[(1, size)].wall / by[(2, size)].wall
            print(f"shard_size {size}: speed-up of 2 Dask workers over 1: {speedup:.2f}x")
    print(f"round trip of an empty Dask task: {empty_task_ms():.2f} ms")


if __name__ == "__main__":
    main()
