"""CocoDataset on the real shared COCO subset: order, selection, identity and every bad-input error."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from vcm_plugin.datasets import CocoDataset, DatasetError, dataset_names, get_dataset
from vcm_plugin.evaluation.coco_eval import CocoEvaluator

NO_ANNOTATION_IDS = (58636, 226111)  # val images that show only street signs (DATA.md)


@pytest.fixture(scope="module")
def coco_dir(shared: Path) -> Path:
    return shared / "data" / "coco"


@pytest.fixture(scope="module")
def val_json(coco_dir: Path) -> Path:
    return coco_dir / "annotations" / "instances_val2017_subset.json"


@pytest.fixture(scope="module")
def val(coco_dir: Path, val_json: Path) -> CocoDataset:
    return CocoDataset(coco_dir / "val2017", val_json)


@pytest.fixture(scope="module")
def val_data(val_json: Path) -> dict:
    return json.loads(val_json.read_text())


def test_default_order_is_sorted_ids_with_real_samples(val: CocoDataset, val_data: dict, coco_dir: Path) -> None:
    json_ids = [img["id"] for img in val_data["images"]]
    assert len(val) == 206 == len(json_ids)
    assert val.image_ids == sorted(json_ids)
    samples = list(val)
    assert [s.image_id for s in samples] == sorted(json_ids)
    per_image: dict[int, int] = {}
    for ann in val_data["annotations"]:
        per_image[ann["image_id"]] = per_image.get(ann["image_id"], 0) + 1
    assert sum(len(s.annotations) for s in samples) == 1786
    for sample in samples:
        info = next(img for img in val_data["images"] if img["id"] == sample.image_id)
        assert sample.path == coco_dir / "val2017" / info["file_name"] and sample.path.is_file()
        assert (sample.height, sample.width) == (info["height"], info["width"])
        assert len(sample.annotations) == per_image.get(sample.image_id, 0)
        assert all(a["image_id"] == sample.image_id for a in sample.annotations)
    first = samples[0].load()
    assert first.shape == (samples[0].height, samples[0].width, 3)


def test_images_without_annotations_are_samples(val: CocoDataset) -> None:
    by_id = {s.image_id: s for s in val}
    for image_id in NO_ANNOTATION_IDS:
        sample = by_id[image_id]
        assert sample.annotations == []
        assert sample.load().shape == (sample.height, sample.width, 3)


def test_list_order_file_order_and_max_images(coco_dir: Path, val_json: Path, val: CocoDataset) -> None:
    images = coco_dir / "val2017"
    chosen = [434204, 139, 58636, 183709]
    assert [s.image_id for s in CocoDataset(images, val_json, image_ids=chosen)] == chosen
    assert CocoDataset(images, val_json, image_ids=[str(i) for i in chosen]).image_ids == chosen
    assert CocoDataset(images, val_json, image_ids=chosen, max_images=2).image_ids == chosen[:2]
    assert CocoDataset(images, val_json, max_images=5).image_ids == val.image_ids[:5]
    file_ids = [int(line.split("\t")[0]) for line in (coco_dir / "sample_ids.txt").read_text().splitlines()
                if line and not line.startswith("#")]
    from_file = CocoDataset(images, val_json, image_ids=coco_dir / "sample_ids.txt")
    assert from_file.image_ids == file_ids and len(file_ids) == 6 and file_ids != sorted(file_ids)
    # two constructions give the same samples in the same order
    again = CocoDataset(images, val_json, image_ids=coco_dir / "sample_ids.txt")
    assert list(again) == list(from_file)


def test_identity_has_sha256_and_ids(coco_dir: Path, val_json: Path, val: CocoDataset) -> None:
    import hashlib

    identity = val.identity()
    assert identity["name"] == "coco"
    assert identity["annotations_sha256"] == hashlib.sha256(val_json.read_bytes()).hexdigest()
    assert identity["image_ids"] == val.image_ids
    assert CocoDataset(coco_dir / "val2017", val_json, max_images=3).identity()["image_ids"] == val.image_ids[:3]


def test_annotations_are_copies(val: CocoDataset) -> None:
    sample = val[0]
    sample.annotations[0]["bbox"] = [0, 0, 0, 0]
    sample.annotations.clear()
    assert val[0].annotations and val[0].annotations[0]["bbox"] != [0, 0, 0, 0]


def test_evaluators_per_task(val: CocoDataset) -> None:
    detection = val.evaluator("detection")
    assert isinstance(detection, CocoEvaluator) and detection.iou_types == ("bbox",)
    assert val.evaluator("segmentation").iou_types == ("bbox", "segm")
    assert detection.image_ids == set(val.image_ids)
    with pytest.raises(DatasetError, match="no evaluator for task 'classification'"):
        val.evaluator("classification")


def test_registry_and_sample_dataset(coco_dir: Path) -> None:
    assert {"coco", "sample"} <= set(dataset_names())
    sample = get_dataset("sample")
    file_ids = [int(line.split("\t")[0]) for line in (coco_dir / "sample_ids.txt").read_text().splitlines()
                if line and not line.startswith("#")]
    assert sample.name == "sample" and sample.image_ids == sorted(file_ids)
    for s in sample:
        assert s.load().shape == (s.height, s.width, 3) and len(s.annotations) >= 4
    assert get_dataset("sample", max_images=2).image_ids == sorted(file_ids)[:2]
    with pytest.raises(DatasetError, match="unknown dataset 'cocoo'.*Did you mean 'coco'"):
        get_dataset("cocoo")
    with pytest.raises(DatasetError, match="dataset 'sample': bad parameters.*colour"):
        get_dataset("sample", colour="red")


def test_entry_point_dataset_is_found(tmp_path: Path) -> None:
    """A third-party Dataset advertised in the vcm_plugin.datasets group is registered."""
    (tmp_path / "toy_ds.py").write_text(textwrap.dedent("""
        from vcm_plugin.datasets import Dataset

        class ToyDataset(Dataset):
            name = "toy"
            def __init__(self, n=2):
                self.n = n
            def __iter__(self):
                return iter(())
            def __len__(self):
                return self.n
            def evaluator(self, task):
                raise NotImplementedError
    """))
    info = tmp_path / "toy_ds-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: toy-ds\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text("[vcm_plugin.datasets]\ntoy = toy_ds:ToyDataset\n")
    code = "from vcm_plugin.datasets import get_dataset; print(len(get_dataset('toy', n=3)))"
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(tmp_path), os.environ.get("PYTHONPATH", "")]))
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "3"


# ---- bad inputs: every error names the file / image id ----

def test_missing_annotation_file(coco_dir: Path, tmp_path: Path) -> None:
    path = tmp_path / "nope.json"
    with pytest.raises(DatasetError, match=f"COCO annotation file {path} does not exist"):
        CocoDataset(coco_dir / "val2017", path)


def test_invalid_json(coco_dir: Path, val_json: Path, tmp_path: Path) -> None:
    path = tmp_path / "truncated.json"
    path.write_bytes(val_json.read_bytes()[:5000])
    with pytest.raises(DatasetError, match=f"{path} is not valid JSON"):
        CocoDataset(coco_dir / "val2017", path)


@pytest.mark.parametrize("content, expected", [
    ([1, 2, 3], "top level is a list"),
    ({"images": [], "categories": []}, r"missing list\(s\) \['annotations'\]"),
    ({"images": [{"id": 1, "file_name": "a.jpg"}], "annotations": [], "categories": []},
     r"images entry id 1 lacks \['height', 'width'\]"),
])
def test_not_instances_format(coco_dir: Path, tmp_path: Path, content, expected: str) -> None:
    path = tmp_path / "other.json"
    path.write_text(json.dumps(content))
    with pytest.raises(DatasetError, match=f"{path} is not COCO instances format: {expected}"):
        CocoDataset(coco_dir / "val2017", path)


def test_annotation_of_unknown_image(coco_dir: Path, val_data: dict, tmp_path: Path) -> None:
    data = json.loads(json.dumps(val_data))
    data["annotations"][3]["image_id"] = 999999999
    path = tmp_path / "bad_ref.json"
    path.write_text(json.dumps(data))
    with pytest.raises(DatasetError, match=f"annotation {data['annotations'][3]['id']} refers to image id 999999999"):
        CocoDataset(coco_dir / "val2017", path)


def test_missing_image_files_error_and_skip(coco_dir: Path, val_json: Path, val: CocoDataset,
                                            tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    images = tmp_path / "val2017"
    images.mkdir()
    kept = val.image_ids[:3]
    for sample in val:
        if sample.image_id in kept:
            shutil.copy(sample.path, images / sample.path.name)
    with pytest.raises(DatasetError) as info:
        CocoDataset(images, val_json)
    message = str(info.value)
    assert message.startswith(f"203 image file(s) listed in {val_json} are missing: ")
    first_missing = val.image_ids[3]
    assert f"{images / f'{first_missing:012d}.jpg'} (image id {first_missing})" in message
    assert message.count("(image id") == 5 and "missing='skip'" in message
    with caplog.at_level("WARNING", logger="vcm_plugin"):  # a log record, shown by the CLI as one line
        skipped = CocoDataset(images, val_json, missing="skip")
    assert "skipped 203 image" in caplog.text
    assert skipped.image_ids == kept and len(skipped.skipped_ids) == 203
    assert [s.load().shape[2] for s in skipped] == [3, 3, 3]
    # max_images within the present images: no error
    assert CocoDataset(images, val_json, max_images=3).image_ids == kept


def test_unknown_and_duplicate_image_ids(coco_dir: Path, val_json: Path, tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match=rf"image id\(s\) \[123\] \(1 in all\) are not in {val_json}"):
        CocoDataset(coco_dir / "val2017", val_json, image_ids=[139, 123])
    ids_file = tmp_path / "ids.txt"
    ids_file.write_text("# my ids\n139\n\n5\n")
    with pytest.raises(DatasetError, match=rf"{ids_file}: image id\(s\) \[5\]"):
        CocoDataset(coco_dir / "val2017", val_json, image_ids=ids_file)
    with pytest.raises(DatasetError, match=r"image id\(s\) \[139\] listed more than once"):
        CocoDataset(coco_dir / "val2017", val_json, image_ids=[139, 802, 139])
    with pytest.raises(DatasetError, match="image id 'abc' is not an integer"):
        CocoDataset(coco_dir / "val2017", val_json, image_ids=["abc"])


def test_size_mismatch_at_load(coco_dir: Path, val_data: dict, tmp_path: Path) -> None:
    data = json.loads(json.dumps(val_data))
    entry = data["images"][0]
    entry["width"] += 7
    path = tmp_path / "wrong_size.json"
    path.write_text(json.dumps(data))
    dataset = CocoDataset(coco_dir / "val2017", path, max_images=2)
    dataset[1].load()  # untouched entry still loads
    with pytest.raises(DatasetError, match=f"image id {entry['id']}: .*{entry['file_name']} is "
                                           f"{entry['width'] - 7}x{entry['height']}, the annotations say "
                                           f"{entry['width']}x{entry['height']}"):
        dataset[0].load()


def test_bad_parameters(coco_dir: Path, val_json: Path, tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match=f"COCO images folder {tmp_path / 'none'} does not exist"):
        CocoDataset(tmp_path / "none", val_json)
    with pytest.raises(DatasetError, match="max_images must be a positive integer"):
        CocoDataset(coco_dir / "val2017", val_json, max_images=0)
    with pytest.raises(DatasetError, match="missing must be 'error' or 'skip'"):
        CocoDataset(coco_dir / "val2017", val_json, missing="ignore")
