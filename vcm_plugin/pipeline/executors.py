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
:func:`~vcm_plugin.pipeline.units.run_job_limited`). With more than one worker the jobs (Dask:
the shards) go out costliest first (:func:`~vcm_plugin.pipeline.units.expected_cost`: slow codecs,
high rates, large pictures), so that no worker is left alone with a long unit at the end; each
worker's busy seconds are added up in a :class:`WorkerLoad` when one is given.

Local pool workers die with the run: on Linux each asks the kernel for SIGKILL when its
parent dies (``prctl(PR_SET_PDEATHSIG)``), and a watchdog thread in every worker exits
when its parent changes (the portable fallback, and the check for a parent that died
before the ``prctl``). An interrupted run (Ctrl-C, SIGTERM, or any exception in the
consumer) cancels the queued jobs and terminates the workers instead of waiting for
them. A worker killed mid-run (the OOM killer, a crashing codec library) breaks the
pool: the pool is replaced, jobs that were queued or already finished go again, and
the job(s) that were running when the worker died are retried once each, alone in the
new pool; a job whose worker dies again becomes a failed row ("worker process died",
naming the codec, quality and image id) and the run goes on.
"""

from __future__ import annotations

import ctypes
import itertools
import logging
import multiprocessing
import os
import signal
import socket
import sys
import threading
import time
import weakref
from collections import deque
from collections.abc import Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from typing import Any

from vcm_plugin.config import ExecutorConfig
from vcm_plugin.errors import VcmError
from vcm_plugin.pipeline.units import (
    Job,
    TaskSpec,
    describe_unit,
    expected_cost,
    failed_rows,
    init_worker,
    metrics_seconds,
    run_job_limited,
    run_jobs,
    task_model,
)
from vcm_plugin.results.store import UnitRow

log = logging.getLogger(__name__)


class ExecutorError(VcmError, RuntimeError):
    """The executor cannot start (Dask missing, scheduler unreachable, bad cluster options)."""


@dataclass
class WorkerLoad:
    """Seconds each worker spent running jobs (``busy``: worker -> s, the worker named ``host:pid``), the
    executor's wall seconds from its start to its end (``wall_s``), and of those the seconds before any job could
    run (``start_s``; Dask: the cluster's start and the workers' set-up with their model loads) and after the last
    rows came in (``stop_s``; Dask: closing the client and the cluster it started)."""

    busy: dict[str, float] = field(default_factory=dict)
    wall_s: float = 0.0
    start_s: float = 0.0
    stop_s: float = 0.0
    metrics_s: float = 0.0  # of the busy seconds, those spent on image metrics (PSNR, MS-SSIM) of decoded pictures

    def add(self, worker: str, seconds: float, metrics_s: float = 0.0) -> None:
        self.busy[worker] = self.busy.get(worker, 0.0) + seconds
        self.metrics_s += metrics_s

    def idle_share(self, workers: int | None = None) -> float | None:
        """The share of the ``workers`` x wall seconds that no job used (None before any work)."""
        n = workers or len(self.busy)
        if not n or self.wall_s <= 0:
            return None
        return max(0.0, 1.0 - sum(self.busy.values()) / (n * self.wall_s))


def worker_name() -> str:
    """``host:pid`` of this process, as :class:`WorkerLoad` names workers."""
    return f"{socket.gethostname()}:{os.getpid()}"


def _timed(run: Any, *args: Any) -> tuple[Any, str, float, float]:
    """``run(*args)``, this worker's name, the seconds it took and those of them spent on image metrics."""
    start, metrics = time.perf_counter(), metrics_seconds()
    result = run(*args)
    return result, worker_name(), time.perf_counter() - start, metrics_seconds() - metrics


def largest_first(jobs: list[Job]) -> list[Job]:
    """``jobs`` by :func:`~vcm_plugin.pipeline.units.expected_cost`, the costliest first (a stable sort)."""
    return sorted(jobs, key=expected_cost, reverse=True)


def execute(jobs: list[Job], tasks: list[TaskSpec], executor: ExecutorConfig, n_jobs: int,
            load: WorkerLoad | None = None) -> Iterator[list[UnitRow]]:
    """Rows of every job, in completion order, from the configured executor; ``load`` gets the workers' busy
    seconds."""
    load = WorkerLoad() if load is None else load
    start = time.perf_counter()
    try:
        if executor.kind == "dask":
            yield from execute_dask(jobs, tasks, executor, n_jobs, load)
        else:
            yield from execute_local(jobs, tasks, n_jobs, executor.task_timeout, load)
    finally:
        load.wall_s = time.perf_counter() - start


def execute_local(jobs: list[Job], tasks: list[TaskSpec], n_jobs: int, timeout: float | None = None,
                  load: WorkerLoad | None = None) -> Iterator[list[UnitRow]]:
    """Run jobs in-process (``n_jobs`` 1, in their order) or in a process pool (costliest first); yield each
    job's rows as it finishes.

    In a pool, a dead worker costs at most the job(s) it was running (see the module
    docstring); an exception raised in the consumer, or closing this generator, stops the
    workers at once.
    """
    load = WorkerLoad() if load is None else load
    if n_jobs <= 1:
        init_worker(tasks)
        for job in jobs:
            rows, *timing = _timed(run_job_limited, job, timeout)
            load.add(*timing)
            yield rows
        return
    if jobs:
        yield from _pool_rows(largest_first(jobs), tasks, n_jobs, timeout, load)


# -- the local process pool ------------------------------------------------------------------
_NOT_STARTED, _STARTED, _FINISHED = 0, 1, 2
_JOB_STATES: Any = None  # in a worker: one byte per job of the run (shared memory written by the workers)
_LIVE_POOLS: weakref.WeakSet[ProcessPoolExecutor] = weakref.WeakSet()  # pools of unfinished local runs
_PR_SET_PDEATHSIG = 1
_WATCHDOG_PERIOD_S = 0.5
_MAX_IDLE_BREAKS = 3  # pools in a row that die before running anything: the workers cannot start


def _ignore_signal(signum: int, frame: Any) -> None:
    """SIGINT handler of pool workers: the parent stops them (Ctrl-C reaches the whole process group)."""


def _watch_parent(parent: int) -> None:
    """Watchdog thread of a pool worker: exit at once when the parent process is gone."""
    while True:
        time.sleep(_WATCHDOG_PERIOD_S)
        if os.getppid() != parent:
            os._exit(1)


def _die_with_parent(parent: int) -> None:
    """Make this worker process end when ``parent`` dies, however it dies (SIGKILL included).

    Linux: ``prctl(PR_SET_PDEATHSIG, SIGKILL)`` (the signal comes when the parent THREAD
    that forked the worker ends: the thread that runs the generator). Everywhere: a daemon
    thread polling ``os.getppid()``, which changes when the worker is re-parented.
    """
    if sys.platform.startswith("linux"):
        try:
            libc = ctypes.CDLL(None, use_errno=True)
            libc.prctl(_PR_SET_PDEATHSIG, int(signal.SIGKILL), 0, 0, 0)
        except (OSError, AttributeError):  # no prctl here: the watchdog below still works
            pass
    if os.getppid() != parent:  # the parent died before the prctl took effect
        os._exit(1)
    threading.Thread(target=_watch_parent, args=(parent,), daemon=True, name="vcm-parent-watchdog").start()


def _init_pool_worker(tasks: list[TaskSpec], parent: int, states: Any) -> None:
    """Initializer of local pool workers: die with the parent, default SIGTERM, then :func:`init_worker`.

    A forked worker inherits the parent's Python signal handlers; the ``vcm`` command's
    SIGTERM handler would turn the pool's ``terminate()`` into a KeyboardInterrupt the
    worker survives, so SIGTERM is reset to its default (die).
    """
    global _JOB_STATES
    _die_with_parent(parent)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    signal.signal(signal.SIGINT, _ignore_signal)
    _JOB_STATES = states
    init_worker(tasks, 1)


def _run_indexed(index: int, job: Job, timeout: float | None) -> tuple[list[UnitRow], str, float, float]:
    """Run job ``index`` in a worker, marking it started, then finished, in the shared job states; its rows, this
    worker's name and the seconds it took."""
    states = _JOB_STATES
    if states is not None:
        states[index] = _STARTED
    done = _timed(run_job_limited, job, timeout)
    if states is not None:
        states[index] = _FINISHED
    return done


def _new_pool(tasks: list[TaskSpec], n_jobs: int, context: Any, states: Any) -> ProcessPoolExecutor:
    pool = ProcessPoolExecutor(max_workers=n_jobs, mp_context=context, initializer=_init_pool_worker,
                               initargs=(tasks, os.getpid(), states))
    _LIVE_POOLS.add(pool)
    return pool


def _stop_pool(pool: ProcessPoolExecutor) -> None:
    """Terminate the workers of ``pool`` now (queued jobs are dropped) and wait until they are gone."""
    _LIVE_POOLS.discard(pool)
    processes = list((getattr(pool, "_processes", None) or {}).values())  # private, but no public way before 3.14
    for process in processes:
        if process.is_alive():
            process.terminate()
    for process in processes:
        process.join(5)
        if process.is_alive():
            process.kill()
            process.join(5)
    pool.shutdown(wait=True, cancel_futures=True)


def stop_local_pools() -> None:
    """Terminate the workers of every local pool still running in this process (the CLI calls it on an interrupt)."""
    for pool in list(_LIVE_POOLS):
        _stop_pool(pool)


def _pool_rows(jobs: list[Job], tasks: list[TaskSpec], n_jobs: int, timeout: float | None,
               load: WorkerLoad) -> Iterator[list[UnitRow]]:
    """:func:`execute_local` with ``n_jobs`` worker processes, in the order of ``jobs``, replacing the pool when a
    worker dies."""
    context = multiprocessing.get_context()
    states = context.RawArray("b", len(jobs))  # written by the workers, read after a pool broke
    fresh = deque(range(len(jobs)))  # never attempted, or lost with a broken pool without being charged
    suspects: deque[int] = deque()  # running when a worker died: retried once, alone in the pool
    retried: set[int] = set()
    idle_breaks = 0
    pending: dict[Future, int] = {}
    pool = _new_pool(tasks, n_jobs, context, states)
    finished = False
    try:
        while fresh or suspects or pending:
            broken = False
            try:
                if suspects:
                    if not pending:  # alone, so that a second death is its own
                        index = suspects.popleft()
                        states[index] = _NOT_STARTED
                        pending[pool.submit(_run_indexed, index, jobs[index], timeout)] = index
                else:
                    while fresh and len(pending) < 2 * n_jobs:  # a bounded window: a crash loses little
                        index = fresh.popleft()
                        pending[pool.submit(_run_indexed, index, jobs[index], timeout)] = index
            except BrokenProcessPool:  # the pool broke since the last wait
                (suspects if index in retried else fresh).appendleft(index)
                broken = True
            if not broken:
                done, _ = wait(pending, return_when=FIRST_COMPLETED)
                for future in done:
                    try:
                        rows, *timing = future.result()
                    except BrokenProcessPool:
                        broken = True
                        continue
                    del pending[future]
                    idle_breaks = 0
                    load.add(*timing)
                    yield rows
            if not broken:
                continue
            _stop_pool(pool)  # every worker is gone: the job states are final
            lost = []
            for future, index in pending.items():
                if future.done() and not future.cancelled() and future.exception() is None:
                    rows, *timing = future.result()  # finished while the pool was breaking
                    load.add(*timing)
                    yield rows
                else:
                    lost.append(index)
            pending.clear()
            running = sorted(i for i in lost if states[i] == _STARTED)
            fresh.extendleft(sorted((i for i in lost if states[i] != _STARTED), reverse=True))
            for index in running:
                if index in retried:
                    job = jobs[index]
                    log.warning("worker process died twice running %s; its units are marked failed", describe_unit(job))
                    yield failed_rows(job, f"{describe_unit(job)}: worker process died (killed, out of memory or "
                                            "crashed) twice on this unit")
                else:
                    retried.add(index)
                    suspects.append(index)
            idle_breaks = 0 if running else idle_breaks + 1
            if idle_breaks >= _MAX_IDLE_BREAKS:
                raise ExecutorError(f"the worker processes of --jobs {n_jobs} died {idle_breaks} times in a row "
                                    "before running any unit; try --jobs 1 to see the error")
            log.warning("a worker process died; a new pool takes over (%d unit(s) that were running are retried "
                        "alone)", len(running))
            pool = _new_pool(tasks, n_jobs, context, states)
        finished = True
    finally:
        if finished:
            _LIVE_POOLS.discard(pool)
            pool.shutdown(wait=True)
        else:  # interrupted, or the consumer stopped: do not wait for the jobs in flight
            _stop_pool(pool)


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
    """A Dask ``WorkerPlugin``: every worker process knows the task specs, uses one thread (torch, and codecs
    through their ``one_thread`` parameters) and loads its task models once, when it starts."""
    from distributed import WorkerPlugin

    class TaskModelsPlugin(WorkerPlugin):
        name = "vcm-plugin-task-models"

        def __init__(self, specs: list[TaskSpec]) -> None:
            self.specs = specs

        def setup(self, worker: Any) -> None:
            init_worker(self.specs, 1)
            for spec in self.specs:  # now, while the other workers start, not in the first shard
                try:
                    task_model(spec.label).load()
                except Exception:  # noqa: BLE001 - the units that need it fail, naming the error
                    log.warning("task model %r does not load on Dask worker %s", spec.label, worker_name(),
                                exc_info=True)

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


def _run_shard(shard: list[Job], timeout: float | None) -> tuple[list[list[UnitRow]], str, float, float]:
    """A Dask task: the jobs of ``shard`` one after the other; their rows, this worker's name and the seconds."""
    return _timed(run_jobs, shard, timeout)


def execute_dask(jobs: list[Job], tasks: list[TaskSpec], executor: ExecutorConfig, n_jobs: int,
                 load: WorkerLoad | None = None) -> Iterator[list[UnitRow]]:
    """Run shards on a Dask cluster, costliest first; yield each job's rows as its shard finishes."""
    if not jobs:
        return
    from dask.distributed import as_completed

    load = WorkerLoad() if load is None else load
    start = time.perf_counter()
    client, cluster = _client(executor, n_jobs)

    def submit(shard: list[Job]) -> Any:
        return client.submit(_run_shard, shard, executor.task_timeout, pure=False, retries=executor.retries)

    try:
        client.register_plugin(_task_models_plugin(tasks), name="vcm-plugin-task-models")  # waits for the set-up
        load.start_s = time.perf_counter() - start
        window = max(2, 2 * max(1, len(client.scheduler_info().get("workers", {})) or n_jobs))
        ordered = sorted(shards(jobs, executor.shard_size), key=lambda shard: sum(map(expected_cost, shard)),
                         reverse=True)
        queue = iter(ordered)
        running = as_completed([submit(shard) for shard in itertools.islice(queue, window)])
        for future in running:
            rows, *timing = future.result()
            load.add(*timing)
            yield from rows
            future.release()
            for shard in itertools.islice(queue, 1):  # the next shard, if any, takes the finished one's place
                running.add(submit(shard))
    finally:
        stop = time.perf_counter()
        client.close()
        if cluster is not None:
            cluster.close()
        load.stop_s = time.perf_counter() - stop


__all__ = ["ExecutorError", "WorkerLoad", "execute", "execute_dask", "execute_local", "jobqueue_cluster",
           "largest_first", "shards", "stop_local_pools", "worker_name"]
