"""The embedded sample: byte-identical copies, official-format COCO json, licenses, size."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
from PIL import Image

from vcm_plugin import read_image
from vcm_plugin.sample import coco_annotations, coco_images_dir, kodak_images, sample_dir
from vcm_plugin.sample.build_sample import build, read_sample_ids

MAX_SAMPLE_BYTES = 3 * 1024 * 1024


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def sample_rows(shared: Path) -> list[dict[str, str]]:
    return read_sample_ids(shared / "data" / "coco" / "sample_ids.txt")


@pytest.fixture(scope="module")
def shared_coco(shared: Path) -> dict:
    return json.loads((shared / "data" / "coco" / "annotations" / "instances_val2017_subset.json").read_text())


def test_paths_live_in_the_package() -> None:
    import vcm_plugin

    root = sample_dir()
    assert root == Path(vcm_plugin.__file__).resolve().parent / "sample"
    assert coco_images_dir().is_dir() and coco_annotations().is_file()
    assert [p.name for p in kodak_images()] == ["kodim04.png", "kodim23.png"]


def test_total_size_at_most_3_mb() -> None:
    total = sum(p.stat().st_size for p in sample_dir().rglob("*") if p.is_file() and "__pycache__" not in p.parts)
    assert 1_000_000 < total <= MAX_SAMPLE_BYTES, f"embedded sample is {total} bytes"


def test_kodak_images_identical_to_shared(shared: Path) -> None:
    shapes = {}
    for path in kodak_images():
        assert _sha256(path) == _sha256(shared / "data" / "kodak" / path.name)
        shapes[path.name] = read_image(path).shape
    assert shapes == {"kodim04.png": (768, 512, 3), "kodim23.png": (512, 768, 3)}  # portrait and landscape


def test_coco_images_identical_to_shared(shared: Path, sample_rows: list[dict[str, str]]) -> None:
    embedded = sorted(p.name for p in coco_images_dir().iterdir())
    assert embedded == sorted(Path(row["file"]).name for row in sample_rows)
    assert len(embedded) == 6
    for row in sample_rows:
        path = coco_images_dir() / Path(row["file"]).name
        assert path.stat().st_size == int(row["file_bytes"])
        assert _sha256(path) == _sha256(shared / "data" / "coco" / row["file"])


def test_annotations_load_with_pycocotools(shared_coco: dict, sample_rows: list[dict[str, str]]) -> None:
    from pycocotools.coco import COCO

    coco = COCO(str(coco_annotations()))
    ids = sorted(int(row["id"]) for row in sample_rows)
    assert sorted(coco.getImgIds()) == ids
    assert len(coco.getCatIds()) == 80
    for image_id in ids:
        expected = sorted(a["id"] for a in shared_coco["annotations"] if a["image_id"] == image_id)
        assert sorted(coco.getAnnIds(imgIds=[image_id])) == expected
        row = next(r for r in sample_rows if int(r["id"]) == image_id)
        assert len(expected) == int(row["n_annotations"])
        info = coco.loadImgs(image_id)[0]
        with Image.open(coco_images_dir() / info["file_name"]) as img:
            assert img.size == (info["width"], info["height"])
    assert len(coco.getAnnIds()) == 70


def test_annotation_json_is_official_subset(shared_coco: dict) -> None:
    sample = json.loads(coco_annotations().read_text())
    assert list(sample) == ["info", "licenses", "images", "annotations", "categories"]
    assert sample["info"] == shared_coco["info"]
    assert sample["licenses"] == shared_coco["licenses"]
    assert sample["categories"] == shared_coco["categories"]
    by_id = {a["id"]: a for a in shared_coco["annotations"]}
    assert all(a == by_id[a["id"]] for a in sample["annotations"])
    images = {im["id"]: im for im in shared_coco["images"]}
    assert all(im == images[im["id"]] for im in sample["images"])
    assert all(im["license"] in (4, 5) for im in sample["images"])  # CC BY 2.0 / CC BY-SA 2.0 only


def test_license_file_lists_every_file(sample_rows: list[dict[str, str]]) -> None:
    text = (sample_dir() / "LICENSE.md").read_text()
    for row in sample_rows:
        line = next(line for line in text.splitlines() if Path(row["file"]).name in line)
        assert row["license_name"] in line and row["license_url"] in line and row["flickr_url"] in line
    assert "CC BY 4.0" in text and "COCO Consortium" in text
    for path in kodak_images():
        assert path.name in text
    assert "Kodak Lossless True Color Image Suite" in text


def test_build_script_reproduces_the_sample(shared: Path, tmp_path: Path) -> None:
    build(shared, tmp_path)
    built = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*") if p.is_file())
    assert len(built) == 6 + 1 + 2 + 1
    for rel in built:
        assert (tmp_path / rel).read_bytes() == (sample_dir() / rel).read_bytes(), f"{rel} differs from the committed"
