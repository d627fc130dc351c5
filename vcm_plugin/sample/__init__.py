"""The embedded demo sample: 6 COCO val2017 images with their annotations, and 2 Kodak images.

Files (terms in ``LICENSE.md`` beside this module; rebuilt by ``vcm build-sample``)::

    coco/val2017/<12-digit id>.jpg            6 CC BY / CC BY-SA COCO val2017 images
    coco/annotations/instances_sample.json    their official COCO instance annotations
    kodak/kodim23.png, kodak/kodim04.png      Kodak images, landscape and portrait
"""

from __future__ import annotations

from pathlib import Path

from vcm_plugin.errors import VcmError

_HERE = Path(__file__).resolve().parent


def _existing(path: Path) -> Path:
    if not path.exists():
        raise VcmError(f"embedded sample file {path} is missing: the package was installed without its data; "
                       "reinstall vcm-plugin (the sample ships as package data)")
    return path


def sample_dir() -> Path:
    """The folder holding the embedded sample (inside the installed package)."""
    return _HERE


def kodak_images() -> list[Path]:
    """The embedded Kodak PNGs (kodim04 portrait 512x768, kodim23 landscape 768x512), sorted."""
    images = sorted(_existing(_HERE / "kodak").glob("kodim*.png"))
    if not images:
        raise VcmError(f"embedded sample folder {_HERE / 'kodak'} holds no kodim*.png")
    return images


def coco_images_dir() -> Path:
    """The folder of the 6 COCO val2017 jpgs; ``file_name`` in :func:`coco_annotations` resolves here."""
    return _existing(_HERE / "coco" / "val2017")


def coco_annotations() -> Path:
    """The official-format COCO instances JSON of the 6 sample images (loads with pycocotools)."""
    return _existing(_HERE / "coco" / "annotations" / "instances_sample.json")
