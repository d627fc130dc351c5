"""Rebuild the embedded sample from the shared real data (maintainers only).

    vcm build-sample [--shared ../shared]

Reproducibly: the 6 COCO val2017 images listed in ``data/coco/sample_ids.txt`` (CC BY / CC BY-SA,
chosen there by a documented rule) and two Kodak images are copied byte for byte and checked
against the source folders' ``SHA256SUMS``; their official COCO annotations are subset
(:func:`subset_annotations`) and ``LICENSE.md`` names the terms of each file.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

from vcm_plugin.hashing import file_sha256

SAMPLE_DIR = Path(__file__).resolve().parent
KODAK_FILES = ("kodim23.png", "kodim04.png")
ANNOTATIONS_NAME = "instances_sample.json"


def default_shared() -> Path:
    """$VCM_SHARED, else ``../shared`` beside the project root."""
    return Path(os.environ.get("VCM_SHARED", SAMPLE_DIR.parents[2] / "shared"))


def read_sample_ids(path: Path) -> list[dict[str, str]]:
    """The rows of ``sample_ids.txt`` (tab-separated, header in the last comment line)."""
    header: list[str] = []
    rows = []
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.startswith("#"):
            header = line.lstrip("# ").split("\t")
        elif line.strip():
            rows.append(dict(zip(header, line.split("\t"))))
    return rows


def _sha256sums(folder: Path) -> dict[str, str]:
    sums = {}
    for line in (folder / "SHA256SUMS").read_text(encoding="utf-8").splitlines():
        digest, name = line.split(maxsplit=1)
        sums[name.lstrip("*").removeprefix("./")] = digest
    return sums


def _copy_checked(src: Path, dst: Path, expected: str) -> None:
    dst.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(src, dst)
    actual = file_sha256(dst)
    if actual != expected:
        raise SystemExit(f"{dst}: SHA-256 {actual} differs from {expected} in SHA256SUMS of {src.parent}")


def subset_annotations(full: dict, image_ids: list[int]) -> dict:
    """An official-format COCO dict holding only ``image_ids`` and all their annotations."""
    wanted = set(image_ids)
    images = sorted((im for im in full["images"] if im["id"] in wanted), key=lambda im: im["id"])
    missing = wanted - {im["id"] for im in images}
    if missing:
        raise SystemExit(f"image ids {sorted(missing)} are not in the source annotation file")
    annotations = sorted((a for a in full["annotations"] if a["image_id"] in wanted), key=lambda a: a["id"])
    return {"info": full["info"], "licenses": full["licenses"], "images": images,
            "annotations": annotations, "categories": full["categories"]}


def license_text(rows: list[dict[str, str]], coco: dict) -> str:
    """LICENSE.md: per-file terms of the embedded sample."""
    lines = [
        "# Licenses of the embedded sample data",
        "",
        "The code of vcm-plugin is BSD-3-Clause; the data files in this folder are NOT, they keep",
        "their own terms, listed here. Built by `build_sample.py` from the project's shared data.",
        "",
        "## COCO val2017 images (`coco/val2017/`)",
        "",
        "Photographs from Flickr, distributed by the COCO dataset under the Flickr license given",
        "per image. Attribution: the photo's Flickr author (see the Flickr URL); via the COCO",
        "dataset (https://cocodataset.org).",
        "",
        "| file | license | license url | flickr url | coco url |",
        "|---|---|---|---|---|",
    ]
    for row in rows:
        lines.append(f"| `{Path(row['file']).name}` | {row['license_name']} | {row['license_url']} | "
                     f"{row['flickr_url']} | {row['coco_url']} |")
    info = coco["info"]
    lines += [
        "",
        f"## COCO annotations (`coco/annotations/{ANNOTATIONS_NAME}`)",
        "",
        f"A subset of the official COCO 2017 instance annotations ({info['description']}, "
        f"{info['date_created']}): the 6 images above, all their annotations and all 80 categories.",
        f"Copyright (c) {info['contributor']}, licensed under Creative Commons Attribution 4.0",
        "(CC BY 4.0, https://creativecommons.org/licenses/by/4.0/); see https://cocodataset.org/#termsofuse.",
        "Per those terms, the images themselves are under the Flickr licenses listed above.",
        "",
        "## Kodak images (`kodak/`)",
        "",
        "| file | source |",
        "|---|---|",
    ]
    for name in KODAK_FILES:
        lines.append(f"| `{name}` | Kodak Lossless True Color Image Suite (Eastman Kodak Company) |")
    lines += [
        "",
        "The Kodak Lossless True Color Image Suite is commonly described as released by the",
        "Eastman Kodak Company for unrestricted use (e.g. on the r0k.us page that has long hosted",
        "the suite); no license file accompanies the copies these were taken from. Cite",
        "\"Kodak Lossless True Color Image Suite\" when you report results.",
        "",
    ]
    return "\n".join(lines)


def build(shared: Path, out: Path = SAMPLE_DIR) -> None:
    """Rebuild the sample under ``out`` from the shared data folder ``shared``."""
    coco_src = shared / "data" / "coco"
    kodak_src = shared / "data" / "kodak"
    rows = read_sample_ids(coco_src / "sample_ids.txt")
    coco_sums = _sha256sums(coco_src)
    for row in rows:
        rel = row["file"]  # e.g. val2017/000000183709.jpg
        _copy_checked(coco_src / rel, out / "coco" / rel, coco_sums[rel])
    full = json.loads((coco_src / "annotations" / "instances_val2017_subset.json").read_text(encoding="utf-8"))
    sample = subset_annotations(full, [int(row["id"]) for row in rows])
    ann_path = out / "coco" / "annotations" / ANNOTATIONS_NAME
    ann_path.parent.mkdir(parents=True, exist_ok=True)
    ann_path.write_text(json.dumps(sample, separators=(",", ":")), encoding="utf-8")
    kodak_sums = _sha256sums(kodak_src)
    for name in KODAK_FILES:
        _copy_checked(kodak_src / name, out / "kodak" / name, kodak_sums[name])
    (out / "LICENSE.md").write_text(license_text(rows, sample), encoding="utf-8")
