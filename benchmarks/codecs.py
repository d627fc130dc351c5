"""Speed, memory and rate-distortion of every available codec on the 24 Kodak images.

Prints, per codec and quality: bpp (total bits / total pixels), mean PSNR-Y (dB), mean
MS-SSIM, encode and decode milliseconds per megapixel (wall time, one image per process,
images coded in parallel on all cores, single-threaded encoders and torch), then the
peak memory of one encode + decode of kodim01 at the highest quality (a fresh process's
peak RSS of a fresh Python process, MiB; ffmpeg child processes not included), then the BD-rate (PSNR-Y, pchip)
of each codec against VVC. `compressai` is the project-zoo learned codec
(`--compressai-model bmshj2018-hyperprior` etc. for compressai.zoo weights in torch.hub's
cache). The points are measured by the evaluation harness (`vcm_plugin.pipeline.compare`):
`--output DIR` keeps its results store, and a rerun into DIR recomputes nothing (its times are
then those of the first run). Run: `.venv/bin/python benchmarks/codecs.py` (`--images N` for a
quick subset, `--codecs vvc,compressai`, `--jobs`, `--csv out.csv`, `--output DIR`).
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
import time
from pathlib import Path

from _memory import peak_rss_of_this_process_mib  # benchmarks/ is the script folder

from vcm_plugin import available_codecs
from vcm_plugin.codecs.registry import get_codec_class
from vcm_plugin.evaluation.bd import bd_rate_report
from vcm_plugin.pipeline.compare import CodecSpec, measure, point_row

# Four qualities per codec, chosen to span roughly 0.1-1.5 bpp on Kodak.
QUALITIES: dict[str, tuple] = {
    "jpeg": (25, 50, 75, 90),
    "vvc": (42, 37, 32, 27),
    "hevc": (42, 37, 32, 27),
    "av1": (50, 42, 34, 26),
    "jxl": (6.0, 3.0, 1.5, 0.75),
    "webp": (25, 50, 75, 90),
    "compressai": (1, 2, 3, 4),
}
ANCHOR = "vvc"


def kodak_dir() -> Path:
    root = Path(os.environ.get("VCM_SHARED", Path(__file__).resolve().parents[2] / "shared"))
    folder = root / "data" / "kodak"
    if not folder.is_dir():
        sys.exit(f"Kodak images not found at {folder} (set VCM_SHARED)")
    return folder


def single_threaded(name: str) -> dict:
    """Parameters that make a codec use one thread, when it has such a parameter."""
    names = {f.name for f in dataclasses.fields(get_codec_class(name))}
    return {"threads": 1} if "threads" in names else {}


def _peak_child(name: str, params: dict, quality, path: str, queue) -> None:
    from vcm_plugin.codecs.registry import get_codec
    from vcm_plugin.images.io import read_image

    codec, image = get_codec(name, **params), read_image(path)
    codec.decode(codec.encode(image, quality))
    queue.put(peak_rss_of_this_process_mib())


def peak_memory_mib(spec: CodecSpec, path: Path) -> float:
    """Peak RSS (MiB) of a fresh process that imports the codec and codes kodim01 once at its highest quality.

    Includes the interpreter and imports (about 60 MiB with numpy and PIL, 300+ MiB once torch is
    imported); ffmpeg-based codecs run their encoder in a child process whose memory is not counted.
    """
    import multiprocessing as mp

    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    quality = max(spec.qualities) if get_codec_class(spec.name).quality_range.higher_is_more_bits \
        else min(spec.qualities)
    proc = ctx.Process(target=_peak_child, args=(spec.name, spec.params, quality, str(path), queue))
    proc.start()
    proc.join()
    return queue.get() if proc.exitcode == 0 else float("nan")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=24)
    parser.add_argument("--jobs", type=int, default=os.cpu_count())
    parser.add_argument("--codecs", default=",".join(QUALITIES))
    parser.add_argument("--csv")
    parser.add_argument("--output", help="keep the harness run (results store) here; a rerun reuses it")
    parser.add_argument("--quality", action="append", default=[], metavar="NAME=Q1,Q2,...",
                        help="override a codec's qualities, e.g. vvc=52,47,42,37 to overlap a weak codec's range")
    parser.add_argument("--compressai-model", default="vcm-hyperprior",
                        help="project-zoo family or compressai.zoo architecture for the compressai codec")
    args = parser.parse_args()
    images = sorted(kodak_dir().glob("kodim*.png"))[: args.images]
    here = {c.name for c in available_codecs(include_unavailable=False)}
    wanted = [n for n in args.codecs.split(",") if n in here and n in QUALITIES]
    skipped = [n for n in args.codecs.split(",") if n not in wanted]
    for item in args.quality:
        name, _, values = item.partition("=")
        QUALITIES[name] = tuple(float(v) if "." in v else int(v) for v in values.split(","))
    extra = {"compressai": {"model": args.compressai_model}}
    specs = [CodecSpec(n, QUALITIES[n], {**single_threaded(n), **extra.get(n, {})}) for n in wanted]
    start = time.perf_counter()
    points = measure(specs, [str(p) for p in images], output=args.output, jobs=args.jobs)
    rows = [point_row(p) for p in points]
    wall = time.perf_counter() - start

    print(f"\n{len(images)} Kodak images, {args.jobs} worker processes, wall {wall:.0f} s; "
          f"skipped (unavailable): {', '.join(skipped) or 'none'}")
    print("| codec | quality | bpp | PSNR-Y dB | MS-SSIM | encode ms/MP | decode ms/MP |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        ms = f"{r['ms_ssim']:.4f}" if r["ms_ssim"] is not None else "n/a"
        print(f"| {r['codec']} | {r['quality']} | {r['bpp']:.4f} | {r['psnr_y']:.2f} | {ms} | "
              f"{r['encode_ms_per_mp']:.0f} | {r['decode_ms_per_mp']:.0f} |")
    print("\n| codec | peak RSS of a process coding kodim01 once (MiB) |\n|---|---|")
    for spec in specs:
        print(f"| {spec.label} | {peak_memory_mib(spec, kodak_dir() / 'kodim01.png'):.0f} |")
    if ANCHOR in wanted:
        anchor_label = next(spec.label for spec in specs if spec.name == ANCHOR)
        anchor = [p for p in points if p.codec == anchor_label]
        print(f"\n| codec | BD-rate vs {ANCHOR} (PSNR-Y, pchip) |\n|---|---|")
        for spec in specs:
            if spec.name == ANCHOR:
                continue
            test = [p for p in points if p.codec == spec.label]
            try:
                value = bd_rate_report([p.bpp for p in anchor], [p.primary for p in anchor],
                                       [p.bpp for p in test], [p.primary for p in test],
                                       anchor_name=ANCHOR, test_name=spec.name).value
                print(f"| {spec.name} | {value:+.2f} % |")
            except Exception as exc:  # report, do not hide, a curve pair without a BD-rate
                print(f"| {spec.name} | n/a: {exc} |")
    if args.csv:
        import csv

        with open(args.csv, "w", newline="") as fh:
            writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows(rows)


if __name__ == "__main__":
    main()
