"""The speed figures of the harness side by side, each with its goal: `make benchmark-all` (a few minutes).

One table, a row per figure, from the functions of the other benchmarks (nothing measured twice):

- harness overhead: wall / (codec + model seconds) of a fresh quickstart run with one job
  (`harness_overhead.overhead`; goal <= 1.05), and where the rest went;
- jobs speed-up: `--jobs 2` over `--jobs 1` on a codec-dominated grid (`harness_overhead.jobs_speedup`) with
  each worker's busy seconds: VVC with `threads: 1` in both runs, the same work per unit (goal >= 1.8x on 2
  cores), and with libvvenc's default threads (for information: with one job it already uses the second core);
- per-picture cost of the ffmpeg codecs at 32x32, 227x227 and 768x512, encode + decode through the fork
  server against one process per command as before it (`small_pictures`; goal: >= 2x cheaper at 32x32
  and 227x227, the larger size for information);
- cache hit rate: a second run into a new folder against the same anchors plus one new codec, sharing one
  temporary unit cache (goal: every anchor unit from the cache, only the new codec computed);
- the VVC adapter (encode + decode) against the same ffmpeg commands run by hand on the same picture
  (files in, files out, one process each; goal: within 1.05x);
- Dask: overhead per image beyond the cluster's start on a LocalCluster with the default shard size
  (`scaling.local_and_dask`; goal < 20 ms).

The machine's core count and load average are printed before and after: on a busy machine every time is
inflated and the ratios are noisy. Run: `.venv/bin/python benchmarks/all.py` (`--repeats N` for the
per-picture rows, `--skip dask,jobs,...`).
"""

from __future__ import annotations

import argparse
import functools
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

import harness_overhead  # noqa: E402
import scaling  # noqa: E402
import small_pictures  # noqa: E402

from vcm_plugin import get_codec, read_image  # noqa: E402
from vcm_plugin.config import config_from_dict  # noqa: E402
from vcm_plugin.pipeline.run import run  # noqa: E402
from vcm_plugin.sample import coco_images_dir, kodak_images  # noqa: E402

SECTIONS = ("overhead", "jobs", "pictures", "cache", "adapter", "dask")


@dataclass
class Row:
    figure: str
    measured: str
    goal: str
    verdict: str


def verdict(value: float, goal: float, higher_is_better: bool, unit: str, why: str = "") -> str:
    """"met", or "missed by X (why)"."""
    if (value >= goal) if higher_is_better else (value <= goal):
        return "met"
    gap = goal - value if higher_is_better else value - goal
    return f"missed by {gap:.3g}{unit}" + (f" ({why})" if why else "")


# -- the rows -----------------------------------------------------------------------------------------------
def overhead_row() -> Row:
    t = harness_overhead.overhead()
    return Row("harness overhead, quickstart, 1 job: wall / (codec + model s)",
               f"{t.ratio:.3f} ({t.wall:.1f} s / {t.work:.1f} s); {t.ratio_with_metrics:.3f} with the image metrics "
               "as work", "<= 1.05", verdict(t.ratio, 1.05, False, "", f"the rest: {t.where()}"))


def jobs_rows() -> list[Row]:
    harness_overhead.fresh_run(harness_overhead.codec_grid(images=1, qualities=(47,)), 1)  # imports, fork server
    rows = []
    for threads in (1, None):
        one, two = harness_overhead.jobs_speedup(harness_overhead.codec_grid(threads=threads))
        speedup = one.wall / two.wall
        busy1, busy2 = sum(one.summary.load.busy.values()), sum(two.summary.load.busy.values())
        idle = two.summary.load.idle_share(2) or 0.0
        why = (f"the units took {busy2 / busy1:.2f}x their one-job seconds, {100 * idle:.0f} % of the workers' time "
               f"idle, {two.summary.setup_s + two.summary.reports_s:.1f} s before and after the units")
        if threads is None:
            why = "libvvenc's own threads already use the second core with one job; " + why
        what = "VVC threads: 1 in both runs" if threads else "VVC default threads"
        rows.append(Row(f"jobs 2 over jobs 1, {one.units} units, {what} (image-quality task)",
                        f"{speedup:.2f}x ({one.wall:.1f} s -> {two.wall:.1f} s); {two.workers()}",
                        ">= 1.8x" if threads else "(information)",
                        verdict(speedup, 1.8, True, "x", why) if threads else why))
    return rows


def picture_rows(repeats: int) -> list[Row]:
    small_pictures.STAT = min  # the least of the repeats: steadier on a busy machine
    image = read_image([p for p in kodak_images() if p.name == "kodim23.png"][0])
    rows = []
    for label in ("vvc", "hevc"):
        name, params, quality = small_pictures.CODECS[label]
        codec = get_codec(name, **params)
        if not codec.is_available():
            rows.append(Row(f"{label} per picture", "not available", "", codec.is_available().reason))
            continue
        for h, w in ((32, 32), (227, 227), (512, 768)):
            picture = np.ascontiguousarray(image[:h, :w])
            stream = codec.encode(picture, quality)

            def both(picture=picture, stream=stream, codec=codec, quality=quality) -> None:
                codec.encode(picture, quality)
                codec.decode(stream)

            ms = small_pictures.timed_ms({p: small_pictures.through(p, both) for p in ("old", "new")}, repeats)
            ratio = ms["old"] / ms["new"]
            small = h * w < 512 * 768
            why = "the encoder's own set-up inside ffmpeg's main() dominates" if label == "vvc" else ""
            rows.append(Row(f"{label} encode + decode per picture, {w}x{h}: one process per command / fork server",
                            f"{ms['old']:.1f} ms / {ms['new']:.1f} ms = {ratio:.2f}x",
                            ">= 2x" if small else "(information)",
                            verdict(ratio, 2.0, True, "x", why) if small else "-"))
    return rows


def cache_row() -> Row:
    from vcm_plugin.pipeline import compare  # noqa: F401 - registers the image-files dataset

    paths = [str(p) for p in sorted(coco_images_dir().glob("*.jpg"))[:4]]
    anchors = {"jpeg": {"qualities": [10, 40]}, "vvc": {"qualities": [42, 47], "preset": "faster"}}

    def config(codecs: dict, out: Path) -> dict:
        return {"name": "cache-bench", "output": str(out), "jobs": 1, "dataset": {"name": "image-files",
                "paths": paths}, "tasks": {"image-quality": {}}, "codecs": codecs}

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        saved = os.environ.get("VCM_CACHE")
        os.environ["VCM_CACHE"] = str(root / "cache")
        try:
            first = run(config_from_dict(config(anchors, root / "a")), quiet=True)
            second = run(config_from_dict(config({**anchors, "webp": {"qualities": [50, 80]}}, root / "b")),
                         quiet=True)
        finally:
            if saved is None:
                os.environ.pop("VCM_CACHE")
            else:
                os.environ["VCM_CACHE"] = saved
    anchor_units = first.units_total
    hit = second.units_from_cache / anchor_units
    new_units = second.units_total - anchor_units
    why = f"{second.units_computed} units computed, {new_units} of them the new codec's"
    return Row("shared unit cache: second run, same anchors + 1 new codec, new folder",
               f"{100 * hit:.0f} % of {anchor_units} anchor units from the cache; computed {second.units_computed} "
               f"(the new codec's {new_units})", "100 %, only the new codec computed",
               "met" if hit == 1.0 and second.units_computed == new_units else f"missed ({why})")


def _by_hand(codec, picture: np.ndarray, quality: int, folder: Path) -> Callable[[], bytes]:
    """The adapter's ffmpeg commands as one would run them by hand: raw RGB file in, stream file, RGB file out."""
    exe = codec.executable()
    h, w = picture.shape[:2]
    rgb, coded, out = folder / "in.rgb", folder / "out.266", folder / "out.rgb"
    rgb.write_bytes(picture.tobytes())

    def files(command: list[str], source: Path, target: Path) -> list[str]:
        return [command[0], "-y", *[str(source) if a == "pipe:0" else str(target) if a == "pipe:1" else a
                                    for a in command[1:]]]

    encode = files(codec.encode_command(h, w, quality, exe), rgb, coded)
    decode = files(codec.decode_command(exe), coded, out)

    def run_both() -> bytes:
        subprocess.run(encode, check=True, stdout=subprocess.DEVNULL)
        subprocess.run(decode, check=True, stdout=subprocess.DEVNULL)
        return coded.read_bytes()
    return run_both


def adapter_row(repeats: int) -> Row:
    codec, quality = get_codec("vvc"), 37
    if not codec.is_available():
        return Row("VVC adapter vs ffmpeg by hand", "not available", "", codec.is_available().reason)
    picture = read_image([p for p in kodak_images() if p.name == "kodim23.png"][0])
    with tempfile.TemporaryDirectory() as tmp:
        by_hand = _by_hand(codec, picture, quality, Path(tmp))
        stream = codec.encode(picture, quality)
        assert stream.data.endswith(by_hand()), "the adapter's stream is not the command's"

        def adapter() -> None:
            codec.decode(codec.encode(picture, quality))

        ms = small_pictures.timed_ms({"adapter": adapter, "by hand": by_hand}, repeats)
    ratio = ms["adapter"] / ms["by hand"]
    h, w = picture.shape[:2]
    return Row(f"VVC adapter vs its ffmpeg commands by hand, {w}x{h} QP {quality}, encode + decode",
               f"{ms['adapter']:.0f} ms / {ms['by hand']:.0f} ms = {ratio:.3f}x", "<= 1.05x",
               verdict(ratio, 1.05, False, "x", "pipes, padding and colour checks of the adapter"))


def dask_row() -> Row:
    with tempfile.TemporaryDirectory() as tmp:
        local, (one,) = scaling.local_and_dask(Path(tmp), [scaling.DEFAULT_SHARD_SIZE], [1])
    per_image = one.per_image_ms(local)
    return Row(f"Dask LocalCluster, 1 worker, shard_size {scaling.DEFAULT_SHARD_SIZE}: overhead per image beyond "
               "start and stop", f"{per_image:.1f} ms ({one.images} units; start {one.start:.1f} s and stop "
               f"{one.stop:.1f} s once per run)",
               "< 20 ms", verdict(per_image, 20.0, False, " ms", "scheduling and transfers per shard"))


# -- the table ------------------------------------------------------------------------------------------
def table(rows: list[Row]) -> str:
    head = ("figure", "measured", "goal", "met?")
    cells = [head, *((r.figure, r.measured, r.goal, r.verdict) for r in rows)]
    lines = ["| " + " | ".join(c) + " |" for c in cells]
    lines.insert(1, "|" + "|".join("---" for _ in head) + "|")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=5, help="of each per-picture timing (the least is kept)")
    parser.add_argument("--skip", default="", help=f"comma-separated sections to leave out: {', '.join(SECTIONS)}")
    args = parser.parse_args()
    skip = {s for s in args.skip.split(",") if s}
    if skip - set(SECTIONS):
        parser.error(f"--skip: unknown {sorted(skip - set(SECTIONS))}; sections: {', '.join(SECTIONS)}")
    start = time.perf_counter()
    print(f"machine: {small_pictures.load()}", flush=True)
    makers: dict[str, Callable[[], list[Row]]] = {
        "overhead": lambda: [overhead_row()], "jobs": jobs_rows,
        "pictures": functools.partial(picture_rows, args.repeats), "cache": lambda: [cache_row()],
        "adapter": lambda: [adapter_row(args.repeats)], "dask": lambda: [dask_row()]}
    rows: list[Row] = []
    for section in SECTIONS:
        if section not in skip:
            started = time.perf_counter()
            rows += makers[section]()
            print(f"  {section}: {time.perf_counter() - started:.0f} s", file=sys.stderr, flush=True)
    print(table(rows))
    print(f"machine at the end: {small_pictures.load()}; {time.perf_counter() - start:.0f} s in all")


if __name__ == "__main__":
    main()
