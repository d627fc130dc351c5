"""Scale-out of `vcm run` on Dask: the same grid on 1 and 2 local workers, and the scheduler's overhead.

Runs one grid (the embedded sample's 6 COCO images, YOLOv5n, JPEG at 6 qualities +
the reference: 42 units) with the local in-process executor, then on a Dask
``LocalCluster`` of 1 and of 2 single-threaded worker processes (one image per Dask
task), each into a fresh folder, and prints wall seconds, the speed-up of 2 workers
over 1, and the overhead per task: (Dask 1 worker - local in-process) / tasks, plus
the round trip of an empty Dask task (submit -> result, ms) measured on 500 tasks.

Run: `.venv/bin/python benchmarks/scaling.py` (needs ../shared/weights or $VCM_SHARED).
"""

from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path

from vcm_plugin.config import config_from_dict
from vcm_plugin.pipeline.run import run


def grid(output: Path, executor: dict) -> dict:
    shared = Path(os.environ.get("VCM_SHARED", Path(__file__).resolve().parents[2] / "shared"))
    return {"name": "scaling", "output": str(output), "jobs": 1,
            "dataset": {"name": "sample", "max_images": 6},
            "tasks": {"detection": {"model": "yolov5", "weights": "yolov5n.pt"}},
            "weights": {"search_path": [str(shared / "weights")]},
            "codecs": {"jpeg": {"qualities": [5, 10, 20, 35, 55, 80]}}, "anchors": ["jpeg"],
            "executor": executor}


def timed(output: Path, executor: dict) -> tuple[float, int]:
    start = time.perf_counter()
    summary = run(config_from_dict(grid(output, executor)), quiet=True)
    return time.perf_counter() - start, summary.units_computed


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
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        local, units = timed(root / "local", {"kind": "local"})
        one, _ = timed(root / "dask1", {"kind": "dask", "cluster": "local", "workers": 1, "shard_size": 1})
        two, _ = timed(root / "dask2", {"kind": "dask", "cluster": "local", "workers": 2, "shard_size": 1})
    rtt = empty_task_ms()
    print(f"grid: {units} units ({units} Dask tasks of one image), {os.cpu_count()} cores")
    print("| executor | wall s |\n|---|---|")
    print(f"| local, in-process | {local:.1f} |\n| dask, 1 worker | {one:.1f} |\n| dask, 2 workers | {two:.1f} |")
    print(f"speed-up of 2 Dask workers over 1: {one / two:.2f}x")
    print(f"overhead per task, (dask 1 worker - local) / tasks, incl. cluster start and a model load per worker: "
          f"{1e3 * (one - local) / units:.0f} ms")
    print(f"round trip of an empty Dask task: {rtt:.2f} ms")


if __name__ == "__main__":
    main()
