"""Executors: where the units of a run are computed. The results store stays in the client.

- ``local`` (default): in-process for one job, else a ``ProcessPoolExecutor`` with a
  bounded window of jobs in flight (one image and codec point per job).
- ``dask``: a dask.distributed cluster -- an existing scheduler (``address``), a
  ``LocalCluster`` of single-threaded worker processes, or a Slurm / PBS cluster through
  dask-jobqueue (``cluster_options`` passed to its constructor, ``workers`` jobs). The
  unit of work is a SHARD: up to ``shard_size`` images of one codec point. Workers run
  codecs and task models (loaded once per worker process by a worker plugin and kept in
  the process cache) and return rows; only the client writes the store, so a killed
  client resumes like the local executor, and a killed worker's shards are recomputed by
  Dask (``retries`` more times for shards that raise), never stored twice (rows are keyed).

Both yield each job's rows as they arrive. ``task_timeout`` bounds every image (see
:func:`~vcm_plugin.pipeline.units.run_job_limited`).
"""

from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from typing import Any

from vcm_plugin.config import ExecutorConfig
from vcm_plugin.errors import VcmError
from vcm_plugin.pipeline.store import UnitRow
from vcm_plugin.pipeline.units import Job, TaskSpec, init_worker, run_job_limited, run_jobs


class ExecutorError(VcmError, RuntimeError):
    """The executor cannot start (Dask missing, scheduler unreachable, bad cluster options)."""


def execute(jobs: list[Job], tasks: list[TaskSpec], executor: ExecutorConfig, n_jobs: int) -> Iterator[list[UnitRow]]:
    """Rows of every job, in completion order, from the configured executor."""
    if executor.kind == "dask":
        yield from execute_dask(jobs, tasks, executor, n_jobs)
    else:
        yield from execute_local(jobs, tasks, n_jobs, executor.task_timeout)


def execute_local(jobs: list[Job], tasks: list[TaskSpec], n_jobs: int,
                  timeout: float | None = None) -> Iterator[list[UnitRow]]:
    """Run jobs in-process (``n_jobs`` 1) or in a process pool; yield each job's rows as it finishes."""
    if n_jobs <= 1:
        init_worker(tasks)
        for job in jobs:
            yield run_job_limited(job, timeout)
        return
    with ProcessPoolExecutor(max_workers=n_jobs, initializer=init_worker, initargs=(tasks, 1)) as pool:
        pending: set[Future] = set()
        for job in jobs:  # keep a bounded window in flight so a crash loses little
            pending.add(pool.submit(run_job_limited, job, timeout))
            if len(pending) >= 2 * n_jobs:
                done, pending = wait(pending, return_when=FIRST_COMPLETED)
                for future in done:
                    yield future.result()
        while pending:
            done, pending = wait(pending, return_when=FIRST_COMPLETED)
            for future in done:
                yield future.result()


def shards(jobs: list[Job], size: int) -> list[list[Job]]:
    """Consecutive jobs of the same codec point, ``size`` at most per shard."""
    out: list[list[Job]] = []
    for job in jobs:
        if out and len(out[-1]) < size and out[-1][0].point == job.point:
            out[-1].append(job)
        else:
            out.append([job])
    return out


def _task_models_plugin(tasks: list[TaskSpec]):
    """A Dask ``WorkerPlugin``: every worker process knows the task specs and uses one torch thread.

    Models then load on first use and stay in the worker process's cache (once per worker).
    """
    from distributed import WorkerPlugin

    class TaskModelsPlugin(WorkerPlugin):
        name = "vcm-plugin-task-models"

        def __init__(self, specs: list[TaskSpec]) -> None:
            self.specs = specs

        def setup(self, worker: Any) -> None:
            init_worker(self.specs, 1)

    return TaskModelsPlugin(tasks)


def _client(executor: ExecutorConfig, n_jobs: int):
    """(client, cluster or None) for the configuration; errors name the executor setting."""
    try:
        from dask.distributed import Client, LocalCluster
    except ImportError as exc:
        raise ExecutorError(f"executor 'dask' needs dask.distributed: pip install 'vcm-plugin[dask]' ({exc})") from exc
    if executor.address:
        try:
            return Client(executor.address, timeout="20s"), None
        except OSError as exc:
            raise ExecutorError(f"executor.address {executor.address!r}: cannot reach the scheduler ({exc})") from exc
    workers = executor.workers or n_jobs
    if executor.cluster == "local":
        options = {"n_workers": workers, "threads_per_worker": 1, "processes": True, "dashboard_address": None,
                   **executor.cluster_options}
        try:
            cluster = LocalCluster(**options)
        except TypeError as exc:
            raise ExecutorError(f"executor.cluster_options: {exc}") from exc
        return Client(cluster), cluster
    cluster = jobqueue_cluster(executor)
    cluster.scale(jobs=workers)
    return Client(cluster), cluster


def jobqueue_cluster(executor: ExecutorConfig):
    """The dask-jobqueue cluster (``SLURMCluster`` / ``PBSCluster``) of ``executor``, not yet scaled.

    ``cluster.job_script()`` shows the batch script each worker job will run.
    """
    try:
        import dask_jobqueue
    except ImportError as exc:
        raise ExecutorError(f"executor.cluster {executor.cluster!r} needs dask-jobqueue: "
                            "pip install 'vcm-plugin[dask]'") from exc
    classes = {"slurm": dask_jobqueue.SLURMCluster, "pbs": dask_jobqueue.PBSCluster}
    if executor.cluster not in classes:
        raise ExecutorError(f"executor.cluster {executor.cluster!r} is not one of {sorted(classes)}")
    try:
        return classes[executor.cluster](**executor.cluster_options)
    except (TypeError, ValueError) as exc:
        raise ExecutorError(f"executor.cluster_options for {executor.cluster}: {exc}") from exc


def execute_dask(jobs: list[Job], tasks: list[TaskSpec], executor: ExecutorConfig,
                 n_jobs: int) -> Iterator[list[UnitRow]]:
    """Run shards on a Dask cluster; yield each job's rows as its shard finishes."""
    if not jobs:
        return
    from dask.distributed import as_completed

    client, cluster = _client(executor, n_jobs)
    try:
        client.register_plugin(_task_models_plugin(tasks), name="vcm-plugin-task-models")
        work = shards(jobs, executor.shard_size)
        window = max(2, 2 * max(1, len(client.scheduler_info().get("workers", {})) or n_jobs))
        queue = iter(work)
        running = as_completed()
        for shard in queue:
            running.add(client.submit(run_jobs, shard, executor.task_timeout, pure=False,
                                      retries=executor.retries))
            if running.count() >= window:
                break
        for future in running:
            yield from future.result()
            future.release()
            nxt = next(queue, None)
            if nxt is not None:
                running.add(client.submit(run_jobs, nxt, executor.task_timeout, pure=False,
                                          retries=executor.retries))
    finally:
        client.close()
        if cluster is not None:
            cluster.close()


__all__ = ["ExecutorError", "execute", "execute_dask", "execute_local", "jobqueue_cluster", "shards"]
