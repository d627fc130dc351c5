"""Shared helpers of the claim (i)-(iii) experiments on ``cifar10-vgg``: training runs, harness evaluation,
BD-rates with an image-bootstrap interval, RD figures, and the JSON / Markdown records.

Training runs are exactly ``vcm train direct|feature|codec CONFIG`` (the YAML is written into
``<output>/configs/``; trained in a pool of ``jobs`` processes with one torch thread each, on the device
that ``--device`` names: ``cpu`` by default, ``auto`` / ``cuda`` where torch sees a GPU); a run whose
``result.json`` was written by the same config is not retrained (rerunning a script resumes it).
``--scale F`` multiplies every training step budget of a script (e.g. 10-50 on a GPU machine); the CIFAR-10
folder is ``--cifar-root``, by default ``$VCM_SHARED/data/cifar10`` (``../shared`` without the variable).
Evaluation is one ``vcm run`` of the harness (real bitstreams, class-balanced CIFAR-10 test images, task
model ``cifar10-vgg``, top-1 in percent) into ``<output>/eval/``. Rates are bits per pixel of the 32x32
original image (bpp), accuracies top-1 in percent.

The detector counterparts (``claims_detector.py``: YOLOv5n on COCO) are :func:`coco_data` (training crops of
``train2017``), :func:`evaluate_coco` (one ``vcm run`` on ``val2017``, box AP in percent as ``map``, per-image
data from each point's own ``per_image``) and the ``metric="map"`` argument of the BD / RD helpers.

Results are read through the public API only (:func:`vcm_plugin.results.load`: the points and the
per-image rows of the run). BD-rate (percent, negative = the test curve needs fewer bits for the same
top-1) is the harness's :func:`vcm_plugin.evaluation.bd.bd_rate_report` (pchip, monotone upper envelope
for noisy top-1 curves, >= 4 points and >= 50 % overlap). Its 95 % interval is the package's image
bootstrap (:func:`vcm_plugin.evaluation.bootstrap.bootstrap_bd`: the same resampled images for every
codec point, rates and top-1 recomputed from the per-image rows). Figures are
:func:`vcm_plugin.reports.plots.plot_curves`.
"""

from __future__ import annotations

import csv
import datetime as _dt
import json
import math
import os
import shutil
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
SHARED_DEFAULT = Path(os.environ.get("VCM_SHARED", ROOT.parent / "shared"))
CIFAR_ROOT_DEFAULT = SHARED_DEFAULT / "data" / "cifar10"
COCO_ROOT_DEFAULT = SHARED_DEFAULT / "data" / "coco"  # train2017/, val2017/, annotations/ (claims_detector.py)
WEIGHTS_DEFAULT = SHARED_DEFAULT / "weights"
TASK_MODEL = "cifar10-vgg"
RD_COLUMNS = ["arm", "codec", "quality", "lmbda", "steps", "bpp", "top1", "images", "train_wall_s",
              "val_bpp", "val_distortion"]
BOOTSTRAP_SEED_OFFSET = 1000  # the image bootstrap uses seed + this
METRIC_NAMES = {"top1": "top1", "map": "mAP"}  # RD-point key of a task metric -> its name in BD labels


@dataclass
class TrainRun:
    """One training run: ``name`` (its folder under ``train/``), ``kind`` (direct | feature | codec), config."""

    name: str
    kind: str
    config: dict[str, Any]


# -- set-up -------------------------------------------------------------------------------------
def base_parser(description: str) -> Any:
    """The arguments every claim script shares (``--output``, ``--quick``, ``--seed``, ...)."""
    import argparse

    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--output", "-o", required=True, help="output folder")
    parser.add_argument("--quick", action="store_true", help="tiny steps / images (smoke test, seconds)")
    parser.add_argument("--seed", type=int, default=0, help="seed of training and of the bootstrap (default 0)")
    parser.add_argument("--jobs", type=int, default=None, help="training runs / harness workers at once "
                                                               "(default: 1 with --quick, else 2)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads per process (default 1)")
    parser.add_argument("--cifar-root", default=str(CIFAR_ROOT_DEFAULT),
                        help="CIFAR-10 folder (default $VCM_SHARED/data/cifar10, else ../shared/data/cifar10)")
    parser.add_argument("--scale", type=float, default=1.0,
                        help="multiply every training step budget by this (default 1; e.g. 10-50 on a GPU machine)")
    parser.add_argument("--device", default="cpu", choices=["cpu", "auto", "cuda"],
                        help="training device (default cpu; auto: CUDA when torch sees it); evaluation stays on CPU")
    parser.add_argument("--quiet", action="store_true")
    parser.add_argument("--replot", action="store_true", help="only redraw DIR/rd.png from the JSON record there")
    return parser


def setup(args: Any) -> tuple[Path, Callable[[str], None]]:
    """Thread limits, the output folder and a logger (stderr) from the parsed arguments."""
    os.environ.setdefault("OMP_NUM_THREADS", str(args.threads))
    import torch

    torch.set_num_threads(args.threads)
    if args.jobs is None:
        args.jobs = 1 if args.quick else 2
    out = Path(args.output).resolve()
    out.mkdir(parents=True, exist_ok=True)
    name = Path(sys.argv[0]).stem

    def log(msg: str) -> None:
        if not args.quiet:
            print(f"[{name} {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)

    return out, log


def machine() -> dict[str, Any]:
    """CPU, cores, torch threads / version, load average (1, 5, 15 min) and the date, for the records."""
    from vcm_plugin.analysis.report import machine_description

    return {"description": machine_description(), "cpus": os.cpu_count(),
            "loadavg": [round(v, 2) for v in os.getloadavg()], "python": sys.version.split()[0],
            "date": _dt.datetime.now().astimezone().isoformat(timespec="seconds")}


def scaled(steps: int, scale: float) -> int:
    """A step budget times ``--scale`` (at least 1 step)."""
    return max(1, int(round(steps * scale)))


def device_key(args: Any) -> dict[str, str]:
    """The ``device`` entry of a training config: none on the CPU (the configs stay as before), else ``args.device``."""
    return {} if args.device == "cpu" else {"device": args.device}


def cifar_data(root: str | Path, crop: int = 32, batch_size: int = 16, quick: bool = False,
               small_images: str = "error") -> dict[str, Any]:
    """The ``data:`` block of a training config: the CIFAR-10 ``train`` folder (16 images held out for
    validation), never the ``test`` split that the harness evaluates on (a separate folder). ``quick``: two
    class folders, 300 images, 4 held out."""
    root = Path(root)
    data: dict[str, Any] = {"train": [str(root / "train")], "val_count": 16, "crop": crop,
                            "batch_size": batch_size, "small_images": small_images}
    if quick:
        data.update(train=[str(root / "train" / "airplane"), str(root / "train" / "cat")], max_train_images=300,
                    val_count=4)
    return data


def coco_data(root: str | Path, crop: int, batch_size: int, val_count: int = 8,
              max_train_images: int | None = None) -> dict[str, Any]:
    """The ``data:`` block of a detector training config: random crops of COCO ``train2017`` under ``root``
    (``val_count`` of them held out for the trainer's validation; images smaller than the crop skipped), never
    ``val2017``, the harness's evaluation images (excluded explicitly)."""
    root = Path(root)
    data: dict[str, Any] = {"train": [str(root / "train2017")], "exclude": [str(root / "val2017")],
                            "val_count": val_count, "crop": crop, "batch_size": batch_size, "small_images": "skip"}
    if max_train_images:
        data["max_train_images"] = max_train_images
    return data


# -- training -----------------------------------------------------------------------------------
def _train_worker(kind: str, config_path: str, threads: int) -> dict[str, Any]:
    """``vcm train KIND CONFIG --quiet`` in this process (a pool worker keeps torch / the task model loaded)."""
    import torch

    from vcm_plugin.config import load_model_config

    torch.set_num_threads(threads)
    if kind == "codec":
        from vcm_plugin.training.codec import CodecTrainConfig, train

        config = load_model_config(config_path, CodecTrainConfig)
        return train(config, Path(config.output))
    from vcm_plugin.training.task_codec import TaskCodecTrainConfig, train

    config = load_model_config(config_path, TaskCodecTrainConfig)
    return train(config, kind, Path(config.output))


class worker_pool:  # noqa: N801 (a context manager used like a function)
    """``with worker_pool(jobs) as pool``: one pool of ``jobs`` spawned training processes for several
    :func:`train_runs` calls (each worker starts torch / CUDA once); None (in-process) for ``jobs`` <= 1."""

    def __init__(self, jobs: int) -> None:
        self.jobs, self.pool = jobs, None

    def __enter__(self) -> Any:
        if self.jobs > 1:
            import multiprocessing
            from concurrent.futures import ProcessPoolExecutor

            self.pool = ProcessPoolExecutor(max_workers=self.jobs, mp_context=multiprocessing.get_context("spawn"))
        return self.pool

    def __exit__(self, *exc: Any) -> None:
        if self.pool is not None:
            self.pool.shutdown(wait=True, cancel_futures=True)


def portable(value: Any, root: Path = ROOT, base: Path | None = None) -> Any:
    """``value`` (a config: dicts, lists, strings) with every absolute path under ``root``'s parent folder (the
    repository and ``../shared`` beside it) written relative to ``base`` (default ``root``), so that a recorded
    config names no machine's folders; other values as they are."""
    if isinstance(value, dict):
        return {k: portable(v, root, base) for k, v in value.items()}
    if isinstance(value, list):
        return [portable(v, root, base) for v in value]
    if isinstance(value, str) and os.path.isabs(value) and Path(value).is_relative_to(root.parent):
        return os.path.relpath(value, base or root)
    return value


def trained_on(device: str) -> str:
    """The suffix of a report section's title naming the training device (empty for the CPU default), so that
    a GPU-trained section is told from the CPU one."""
    return "" if device in ("cpu", "n/a") else f" (trained on {device})"


def eval_record(config: dict[str, Any], record: Path, root: Path = ROOT) -> str:
    """The YAML text of the recorded harness config ``record``: ``vcm run <record>`` from ``root`` reruns it, and
    it names no machine's folders. As :func:`vcm_plugin.config.load_config` reads a file, the dataset's and the
    weights' paths are written relative to ``record``'s folder; ``output`` and the codecs' checkpoints, read
    relative to the working directory, relative to ``root``."""
    import yaml

    folder_relative = ("dataset", "weights")
    recorded = {k: portable(v, root, record.parent if k in folder_relative else root) for k, v in config.items()}
    return (f"# vcm run {os.path.relpath(record, root)}   (from the repository root: the dataset's and weights' "
            "paths are relative to this file's folder, output and checkpoints to the repository root)\n"
            + yaml.safe_dump(recorded, sort_keys=False))


def train_runs(runs: Sequence[TrainRun], out: Path, jobs: int, log: Callable[[str], None], pool: Any = None,
               tolerate: bool = False) -> dict[str, dict]:
    """Train every run, ``jobs`` at a time (see the module docstring); returns name -> its ``result.json``.

    Each config is written to ``configs/<name>.yaml`` (paths through :func:`portable`) and trained exactly as
    ``vcm train KIND <that file>`` run from the repository root (same schema, same trainer), in-process for
    ``jobs`` 1, else in ``pool`` (:class:`worker_pool`) or a pool of ``jobs`` worker processes made for this call.
    ``tolerate``: a run that fails (e.g. a non-finite loss) is logged and returned as
    ``{"failed": message, "wall_s": nan, "val": {}}`` instead of stopping every run.
    """
    import yaml

    (out / "configs").mkdir(parents=True, exist_ok=True)
    todo, results = [], {}
    for run in runs:
        folder = out / "train" / run.name
        config = {**run.config, "output": str(folder)}
        path = out / "configs" / f"{run.name}.yaml"
        path.write_text(f"# vcm train {run.kind} {path.name}   (written by {Path(sys.argv[0]).name}; paths relative to "
                        "the repository root: run it from there)\n"
                        + yaml.safe_dump(portable(config), sort_keys=False))
        spec = folder / "spec.json"
        if (folder / "result.json").exists() and spec.exists() and json.loads(spec.read_text()) == config:
            results[run.name] = json.loads((folder / "result.json").read_text())
            continue
        if folder.exists():
            shutil.rmtree(folder)
        folder.mkdir(parents=True)
        spec.write_text(json.dumps(config, indent=1))
        todo.append((run, str(path), int(config.get("threads") or 1)))
    if len(results):
        log(f"{len(results)} runs already trained with the same config: kept")
    log(f"training {len(todo)} runs, {jobs} at a time")

    def done(run: TrainRun, get: Callable[[], dict[str, Any]]) -> None:
        try:
            result = get()
        except Exception as exc:  # a worker's TrainingError (NaN loss, ...) or a crashed worker
            if not tolerate:
                raise
            first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
            results[run.name] = {"failed": f"{type(exc).__name__}: {first}", "wall_s": math.nan, "val": {}}
            log(f"  {run.name}: FAILED ({results[run.name]['failed']})")
            return
        results[run.name] = result
        log(f"  {run.name}: {result['steps']} steps in {result['wall_s']:.0f} s, val bpp {result['val']['bpp']:.3f}")

    def submit(executor: Any) -> list[tuple[TrainRun, Any]]:
        return [(run, executor.submit(_train_worker, run.kind, path, threads)) for run, path, threads in todo]

    if jobs <= 1:
        for run, path, threads in todo:
            done(run, lambda: _train_worker(run.kind, path, threads))  # noqa: B023 (called at once)
        return {run.name: results[run.name] for run in runs}
    from concurrent.futures.process import BrokenProcessPool

    futures = None
    if pool is not None:
        try:
            futures = submit(pool)
        except BrokenProcessPool:  # a worker died in an earlier call (e.g. killed): a new pool for this one
            log("the shared worker pool is broken: a new pool for these runs")
    if futures is not None:
        for run, future in futures:
            done(run, future.result)
    else:
        with worker_pool(jobs) as own:
            for run, future in submit(own):
                done(run, future.result)
    return {run.name: results[run.name] for run in runs}


# -- evaluation ---------------------------------------------------------------------------------
def _harness_run(codecs: dict[str, dict[str, Any]], out: Path, name: str, dataset: dict[str, Any],
                 tasks: dict[str, Any], extra: dict[str, Any], jobs: int,
                 log: Callable[[str], None]) -> tuple[Any, Any]:
    """One fresh ``vcm run`` of ``codecs`` on ``dataset`` with ``tasks`` into ``out/eval`` (``out/eval/<name>``),
    its config recorded in ``out/configs/``; (the run's summary, its loaded results)."""
    from vcm_plugin.config import config_from_dict
    from vcm_plugin.pipeline.run import run
    from vcm_plugin.results import load

    folder = out / "eval" / name if name else out / "eval"
    if folder.exists():  # stale rows of other weights would be mixed into the per-image bootstrap
        shutil.rmtree(folder)
    config = {"name": f"{out.name}-eval" + (f"-{name}" if name else ""), "output": str(folder), "dataset": dataset,
              "tasks": tasks, **extra, "codecs": codecs, "anchors": [], "non_monotonic": "envelope"}
    (out / "configs").mkdir(parents=True, exist_ok=True)
    record = out / "configs" / (f"eval-{name}.yaml" if name else "eval.yaml")
    record.write_text(eval_record(config, record))
    log(f"evaluating {sum(len(c['qualities']) for c in codecs.values())} codec points on "
        f"{dataset.get('max_images')} images")
    summary = run(config_from_dict(config), jobs=jobs, quiet=True)
    if summary.units_failed:
        log(f"WARNING: {summary.units_failed} units failed (see {folder / 'failures.md'})")
    return summary, load(folder)


def depth_verdict(entries: list[dict[str, Any]]) -> str:
    """Claim (iii)'s fixed rule over the deeper points' BD entries (CIFAR and detector scripts): "supported" when
    every interval lies below 0, "partly" when some do and none above, "contradicted" when some lie above and none
    below, else "inconclusive"."""
    signs = [ci_sign(e) for e in entries]
    below, above = signs.count("below 0"), signs.count("above 0")
    if entries and below == len(entries):
        return "supported"
    if below and not above:
        return "partly"
    if above and not below:
        return "contradicted"
    return "inconclusive"


def evaluate(codecs: dict[str, dict[str, Any]], out: Path, cifar_root: str | Path, max_images: int, jobs: int,
             log: Callable[[str], None], name: str = "") -> dict[str, Any]:
    """One harness run of ``codecs`` (label -> codec entry) on class-balanced CIFAR-10 test images, into
    ``out/eval`` (``out/eval/<name>`` with a ``name``).

    Returns ``{"points": [{codec, quality, bpp, top1, images, failed}], "uncompressed_top1", "wall_s",
    "per_image": {(codec, quality): PerImage (bits, pixels, top-1) in one image order}, "image_ids"}``.
    """
    from vcm_plugin.results import REFERENCE

    summary, results = _harness_run(
        codecs, out, name, {"name": "cifar10", "root": str(cifar_root), "split": "test", "max_images": max_images},
        {"classification": {"model": TASK_MODEL}}, {}, jobs, log)
    points, uncompressed = [], math.nan
    for p in results.points:  # rounded as results.csv gives them (6 and 4 decimals), as the records always were
        top1 = round(p.value("top1"), 4)
        if p.codec == REFERENCE:
            uncompressed = top1
            continue
        points.append({"codec": p.codec, "quality": int(p.quality), "bpp": math.nan if p.bpp is None
                       else round(p.bpp, 6), "top1": top1, "images": p.images, "failed": p.failed})
    ids, per_image = _per_image(results)
    return {"points": points, "uncompressed_top1": uncompressed, "wall_s": round(summary.wall_s, 1),
            "per_image": per_image, "image_ids": ids, "images": max_images}


def evaluate_coco(codecs: dict[str, dict[str, Any]], out: Path, coco_root: str | Path, weights_dir: str | Path,
                  max_images: int, jobs: int, log: Callable[[str], None], name: str = "",
                  task_model: str = "yolov5", task_weights: str = "yolov5n.pt") -> dict[str, Any]:
    """One harness run of ``codecs`` on the first ``max_images`` COCO ``val2017`` images under ``coco_root``
    (annotations ``annotations/instances_val2017_subset.json``) with the detector ``task_model`` (weights
    ``task_weights`` found in ``weights_dir``), as ``eval_configs/coco_shared.yaml`` runs it, into ``out/eval``
    (``out/eval/<name>`` with a ``name``). The metric is the harness's primary one, COCO box AP@[.5:.95] in
    percent (``bbox/AP``), stored as ``map`` in the points.

    Returns ``{"points": [{codec, quality, bpp, map, images, failed}], "uncompressed_map", "wall_s",
    "per_image": {(codec, quality): PerImage (bits, pixels, the COCO AP resampler)}, "images"}``.
    """
    from vcm_plugin.results import REFERENCE

    root = Path(coco_root)
    summary, results = _harness_run(
        codecs, out, name, {"name": "coco", "images_dir": str(root / "val2017"),
                            "annotations": str(root / "annotations" / "instances_val2017_subset.json"),
                            "max_images": max_images},
        {"detection": {"model": task_model, "weights": task_weights}}, {"weights": {"search_path": [str(weights_dir)]}},
        jobs, log)
    points, uncompressed, per_image = [], math.nan, {}
    for p in results.points:
        value = round(p.primary, 4)
        if p.codec == REFERENCE:
            uncompressed = value
            continue
        points.append({"codec": p.codec, "quality": int(p.quality), "bpp": math.nan if p.bpp is None
                       else round(p.bpp, 6), "map": value, "images": p.images, "failed": p.failed})
        if p.per_image is not None:
            per_image[(p.codec, int(p.quality))] = p.per_image
    return {"points": points, "uncompressed_map": uncompressed, "wall_s": round(summary.wall_s, 1),
            "per_image": per_image, "images": max_images}


def _per_image(results: Any) -> tuple[list[str], dict]:
    """(image ids, (codec, quality) -> PerImage (bits, pixels, top-1 in percent) in that order) of the
    compressed points whose every image has a top-1 score."""
    from vcm_plugin.evaluation.bootstrap import PerImage, PerImageMean
    from vcm_plugin.results import REFERENCE

    ids = sorted({row.unit.image_id for row in results.images})
    index = {i: k for k, i in enumerate(ids)}
    table: dict[tuple[str, int], np.ndarray] = {}
    for row in results.images:
        if row.label.codec == REFERENCE or "top1" not in row.scores:
            continue
        values = table.setdefault((row.label.codec, int(row.label.quality)), np.full((3, len(ids)), np.nan))
        values[:, index[row.unit.image_id]] = row.unit.bits, row.unit.pixels, row.scores["top1"]
    return ids, {k: PerImage(v[0], v[1], PerImageMean(v[2])) for k, v in table.items() if not np.isnan(v).any()}


# -- BD-rate ------------------------------------------------------------------------------------
def bd_entry(anchor: Sequence[dict], test: Sequence[dict], anchor_name: str, test_name: str,
             per_image: dict | None = None, n_boot: int = 0, seed: int = 0, metric: str = "top1") -> dict[str, Any]:
    """BD-rate (percent) and BD-top1 (points) of ``test`` against ``anchor`` (lists of RD-point dicts with
    codec, quality, bpp, top1), with the image-bootstrap 95 % interval of the BD-rate when ``per_image`` is
    given; ``bd_rate_pct`` None plus ``note`` "n/a: <reason>" when it cannot be computed. ``metric``: the
    points' key of the task metric (e.g. ``map`` for detection); the entry's ``bd_top1_pts`` / ``ci95_top1``
    then hold the BD-metric of that key (its name in ``metric``), in the metric's points."""
    from vcm_plugin.errors import VcmError
    from vcm_plugin.evaluation.bd import bd_metric_report, bd_rate_report
    from vcm_plugin.evaluation.bootstrap import bootstrap_bd

    entry: dict[str, Any] = {"anchor": anchor_name, "test": test_name, "bd_rate_pct": None, "bd_top1_pts": None,
                             "ci95": None, "ci95_top1": None, "n_boot": 0, "overlap": None, "dropped": [],
                             "note": "", **({"metric": metric} if metric != "top1" else {})}

    def curve(points: Sequence[dict]) -> tuple[list[float], list[float]]:
        return [p["bpp"] for p in points], [p[metric] for p in points]

    (ar, am), (tr, tm) = curve(anchor), curve(test)
    try:
        rep = bd_rate_report(ar, am, tr, tm, non_monotonic="envelope", anchor_name=anchor_name, test_name=test_name)
        entry.update(bd_rate_pct=round(rep.value, 2), overlap=round(rep.overlap, 3),
                     dropped=[f"{anchor_name} bpp {d.rate:.4f}" for d in rep.anchor_dropped]
                     + [f"{test_name} bpp {d.rate:.4f}" for d in rep.test_dropped])
    except VcmError as exc:
        entry["note"] = f"n/a: {exc}"
    try:
        entry["bd_top1_pts"] = round(bd_metric_report(ar, am, tr, tm, non_monotonic="envelope",
                                                      anchor_name=anchor_name, test_name=test_name).value, 2)
    except VcmError as exc:
        entry["note"] = "; ".join(filter(None, [entry["note"], f"BD-{METRIC_NAMES.get(metric, metric)} n/a: {exc}"]))
    if (entry["bd_rate_pct"] is None and entry["bd_top1_pts"] is None) or not per_image or n_boot <= 0:
        return entry
    keys_a = [(p["codec"], p["quality"]) for p in anchor]
    keys_t = [(p["codec"], p["quality"]) for p in test]
    if not all(k in per_image for k in keys_a + keys_t):
        entry["note"] = "; ".join(filter(None, [entry["note"], "bootstrap n/a: per-image rows missing"]))
        return entry
    values = bootstrap_bd([per_image[k] for k in keys_a], [per_image[k] for k in keys_t], n_boot,
                          seed + BOOTSTRAP_SEED_OFFSET)
    values["top1"] = values.pop("metric")
    for kind, key, point in (("rate", "ci95", "bd_rate_pct"), ("top1", "ci95_top1", "bd_top1_pts")):
        vals = values[kind]
        if entry[point] is not None and len(vals) >= max(10, n_boot // 2):
            entry[key] = [round(float(v), 2) for v in np.quantile(vals, [0.025, 0.975])]
    entry["n_boot"] = len(values["rate"])
    for kind, point, what in (("rate", "bd_rate_pct", "BD-rate"),
                              ("top1", "bd_top1_pts", f"BD-{METRIC_NAMES.get(metric, metric)}")):
        missing = n_boot - len(values[kind])
        if entry[point] is not None and missing:
            no_ci = " (too few for an interval)" if len(values[kind]) < max(10, n_boot // 2) else ""
            entry["note"] = "; ".join(filter(None, [entry["note"], f"{missing} of {n_boot} bootstrap resamples "
                                                                   f"had no valid {what}{no_ci}"]))
    return entry


def fmt_bd(entry: dict[str, Any], reason: bool = False) -> str:
    """'-12.3 % [-20.1, -4.0]' (BD-rate and its interval), or 'n/a' (with the reason when ``reason``)."""
    if entry["bd_rate_pct"] is None:
        metric = entry.get("metric", "top1")
        why = entry["note"].removeprefix("n/a: ").split(f"; BD-{METRIC_NAMES.get(metric, metric)} n/a")[0]
        return f"n/a ({why})" if reason else "n/a"
    ci = f" [{entry['ci95'][0]:+.1f}, {entry['ci95'][1]:+.1f}]" if entry.get("ci95") else ""
    return f"{entry['bd_rate_pct']:+.1f} %{ci}"


def fmt_top1(entry: dict[str, Any]) -> str:
    """'+3.10 [+1.2, +5.0]' (BD-top1, or the BD-metric of ``entry["metric"]``, in points and its interval) or 'n/a'."""
    if entry.get("bd_top1_pts") is None:
        return "n/a"
    ci = entry.get("ci95_top1")
    return f"{entry['bd_top1_pts']:+.2f}" + (f" [{ci[0]:+.2f}, {ci[1]:+.2f}]" if ci else "")


def fmt_both(entry: dict[str, Any]) -> str:
    """'BD-rate -12.3 % [..], BD-top1 +3.10 [..] points' (either may be n/a)."""
    top1, name = fmt_top1(entry), METRIC_NAMES.get(entry.get("metric", "top1"), entry.get("metric", "top1"))
    return f"BD-rate {fmt_bd(entry)}, BD-{name} {top1}{'' if top1 == 'n/a' else ' points'}"


def ci_sign(entry: dict[str, Any]) -> str:
    """'below 0' / 'above 0' / 'spans 0' / 'n/a' for the BD-rate's bootstrap interval (point estimate alone
    when no interval)."""
    if entry["bd_rate_pct"] is None:
        return "n/a"
    lo, hi = entry["ci95"] if entry.get("ci95") else (entry["bd_rate_pct"], entry["bd_rate_pct"])
    return "below 0" if hi < 0 else ("above 0" if lo > 0 else "spans 0")


# -- records and figures ------------------------------------------------------------------------
def write_rd(rows: list[dict[str, Any]], out: Path, columns: Sequence[str] = RD_COLUMNS) -> None:
    """``rd_points.csv`` (``columns``, default :data:`RD_COLUMNS`: bpp over original pixels, top-1 in percent)."""
    with open(out / "rd_points.csv", "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(columns), extrasaction="ignore")
        writer.writeheader()
        for row in rows:
            writer.writerow({k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in row.items()})


def rd_rows(arms: dict[str, dict[str, Any]], evaluation: dict[str, Any], results: dict[str, dict],
            metric: str = "top1") -> list[dict]:
    """RD rows of every arm: ``arms`` label -> {"runs": [run names in quality order], "lmbdas", "steps"};
    ``metric``: the key of the task metric in the evaluation's points and in the rows."""
    rows = []
    for label, arm in arms.items():
        for q, (name, lmbda) in enumerate(zip(arm["runs"], arm["lmbdas"]), start=1):
            point = next((p for p in evaluation["points"] if p["codec"] == label and p["quality"] == q), None)
            res = results[name]  # a failed run ({"failed": ...}, see train_runs) has no point
            rows.append({"arm": label, "codec": res.get("codec", "compressai"), "quality": q, "lmbda": lmbda,
                         "steps": arm["steps"], "bpp": point["bpp"] if point else math.nan,
                         metric: point[metric] if point else math.nan, "images": point["images"] if point else 0,
                         "train_wall_s": res["wall_s"], "val_bpp": res["val"].get("bpp"),
                         "val_distortion": res["val"].get("distortion", res["val"].get("mse")),
                         **({"failed": res["failed"]} if "failed" in res else {})})
    return rows


def arm_points(rows: list[dict], arm: str, metric: str = "top1") -> list[dict]:
    """The RD points of one arm as BD inputs (codec label = arm; ``metric``: the task metric's key)."""
    return [{"codec": r["arm"], "quality": r["quality"], "bpp": r["bpp"], metric: r[metric]}
            for r in rows if r["arm"] == arm and math.isfinite(r["bpp"])]


def plot_rd(curves: list[tuple[str, list[dict], dict[str, Any]]], uncompressed: float, path: Path, title: str,
            note: str = "", metric: str = "top1", xlabel: str = "rate (bits per pixel of the 32x32 image, log scale)",
            ylabel: str = "top-1 accuracy (%)") -> None:
    """Top-1 (%) (or ``metric``) vs bpp (log axis) of each (label, points, matplotlib style), the uncompressed
    value dotted."""
    from vcm_plugin.reports.plots import plot_curves

    plot_curves([(label, [(p["bpp"], p[metric]) for p in points], style) for label, points, style in curves], path,
                xlabel=xlabel, ylabel=ylabel,
                title=title, reference=(f"uncompressed ({uncompressed:.1f} %)", uncompressed,
                                        {"color": "0.4", "ls": ":", "lw": 1.2}),
                log_x=True, legend_outside=True, note=note, size=(8.4, 4.4), dpi=100)


def read_json(path: Path) -> dict[str, Any]:
    return json.loads(Path(path).read_text())


def write_json(path: Path, data: dict[str, Any]) -> None:
    path.write_text(json.dumps(data, indent=2, default=str) + "\n")


def command_line(argv: Sequence[str] | None) -> str:
    return " ".join([Path(sys.argv[0]).name, *(argv if argv is not None else sys.argv[1:])])
