"""OpenImagesDataset / openimages-vcm on the shared MPEG VCM files and the 3 real images: selection, order,
sizes, identity, bad inputs, and the Open Images evaluator end to end."""

from __future__ import annotations

import json
import shutil
import warnings
from pathlib import Path

import numpy as np
import pytest

from vcm_plugin.datasets import DatasetError, dataset_names, get_dataset
from vcm_plugin.datasets.openimages import OpenImagesDataset, OpenImagesVcmDataset, read_image_list
from vcm_plugin.tasks.coco_names import COCO80_NAMES, COCO_CATEGORIES
from vcm_plugin.tasks.predictions import Detections

PRESENT = ("0001eeaf4aed83f9", "000a1249af2bc5f0", "00b562abdf5766d3")  # the 3 real images (images/DATA.md)
NAME_TO_COCO_ID = {name.replace(" ", "_"): cid for cid, name in COCO_CATEGORIES.items()}


@pytest.fixture(scope="module")
def vcm(shared: Path) -> Path:
    return shared / "data" / "openimages" / "mpeg-vcm"


@pytest.fixture(scope="module")
def images(shared: Path) -> Path:
    return shared / "data" / "openimages" / "images"


@pytest.fixture(scope="module")
def detection(vcm: Path, images: Path) -> OpenImagesVcmDataset:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return OpenImagesVcmDataset(vcm, images, missing="skip")


def _list_ids(path: Path) -> list[str]:
    return [line[:-4] for line in path.read_text().splitlines()]


@pytest.fixture()
def small(vcm: Path, tmp_path: Path) -> dict[str, Path]:
    """Copies of the detection files restricted to the 3 present images plus 2 absent ones (list order kept)."""
    listed = _list_ids(vcm / "detection_validation_input_5k.lst")
    keep = [i for i in listed if i in PRESENT] + ["bef50424c62d12c5", "c540d9c96b6a79a2"]
    files = {"image_list": tmp_path / "list.lst", "boxes": tmp_path / "boxes.csv", "labels": tmp_path / "labels.csv",
             "labelmap": tmp_path / "selected_classes.txt"}
    files["image_list"].write_text("\n".join(f"{i}.jpg" for i in keep))
    for key, name in (("boxes", "detection_validation_5k_bbox.csv"), ("labels", "detection_validation_labels_5k.csv")):
        lines = (vcm / name).read_text().splitlines()
        files[key].write_text("\n".join([lines[0]] + [ln for ln in lines[1:] if ln.split(",")[0] in keep]) + "\n")
    shutil.copy(vcm / "labelmaps" / "detection-ipsl" / "selected_classes.txt", files["labelmap"])
    return files


def _build(images: Path, files: dict[str, Path], **kw) -> OpenImagesDataset:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return OpenImagesDataset(images, **{k: v for k, v in files.items()}, **kw)


# -- selection, order, sizes ---------------------------------------------------------------
def test_registered_names() -> None:
    names = dataset_names()
    assert "openimages" in names and "openimages-vcm" in names


def test_skip_keeps_the_three_real_images_in_list_order_and_warns_once(vcm: Path, images: Path,
                                                                       caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level("WARNING", logger="vcm_plugin"):  # a log record, shown by the CLI as one line
        ds = get_dataset("openimages-vcm", root=vcm, images_dir=images, subset="detection", missing="skip")
    messages = [r.getMessage() for r in caplog.records]
    assert len(messages) == 1, messages
    assert "skipped 4997 of 5000" in messages[0] and "bef50424c62d12c5" in messages[0]
    listed = _list_ids(vcm / "detection_validation_input_5k.lst")
    assert ds.image_ids == [i for i in listed if i in PRESENT]  # list order, not sorted
    assert ds.image_ids != sorted(ds.image_ids)
    assert len(ds) == 3 and len(ds.skipped_ids) == 4997 and ds.skipped_ids[0] == listed[0]
    assert [s.image_id for s in ds] == ds.image_ids
    assert all(s.path == images / f"{s.image_id}.jpg" for s in ds)
    assert len(ds.class_names) == 47


def test_missing_error_names_count_and_first_files(vcm: Path, images: Path) -> None:
    listed = _list_ids(vcm / "detection_validation_input_5k.lst")
    with pytest.raises(DatasetError) as info:
        get_dataset("openimages-vcm", root=vcm, images_dir=images)
    text = str(info.value)
    assert "4997 image file(s)" in text
    assert all(f"{i}.jpg" in text for i in listed[:5]) and f"{listed[5]}.jpg" not in text
    assert "missing='skip'" in text


def test_max_images_first_n_after_skipping(vcm: Path, images: Path, detection: OpenImagesVcmDataset) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        two = OpenImagesVcmDataset(vcm, images, missing="skip", max_images=2)
    assert two.image_ids == detection.image_ids[:2]
    with pytest.raises(DatasetError, match="max_images"):
        OpenImagesVcmDataset(vcm, images, missing="skip", max_images=0)
    with pytest.raises(DatasetError, match="missing must be"):
        OpenImagesVcmDataset(vcm, images, missing="ignore")


def test_sizes_equal_the_numpixel_json_and_images_load(vcm: Path, detection: OpenImagesVcmDataset) -> None:
    numpixel = json.loads((vcm / "extra" / "Openimage_numpixel_test5000.json").read_text())
    for sample in detection:
        height, width, pixels = numpixel[sample.image_id]
        assert (sample.height, sample.width) == (height, width) and height * width == pixels
    first = next(iter(detection))
    assert first.load().shape == (first.height, first.width, 3)


def test_annotations_are_pixel_boxes(vcm: Path, detection: OpenImagesVcmDataset) -> None:
    sample = detection[detection.image_ids.index("0001eeaf4aed83f9")]  # 1 airplane box (images/DATA.md)
    assert [a["label"] for a in sample.annotations] == ["airplane"]
    x1, y1, x2, y2 = sample.annotations[0]["bbox"]  # the CSV row: XMin, XMax, YMin, YMax normalised
    assert (x1, x2) == pytest.approx((0.022673031 * 1024, 0.9642004999999999 * 1024))
    assert (y1, y2) == pytest.approx((0.07103825 * 447, 0.80054647 * 447))
    assert sample.annotations[0]["is_group_of"] is False


def test_segmentation_list_png_names_map_to_jpg_then_fall_back(small: dict[str, Path], images: Path,
                                                                tmp_path: Path) -> None:
    folder = tmp_path / "imgs"
    folder.mkdir()
    shutil.copy(images / f"{PRESENT[0]}.jpg", folder / f"{PRESENT[0]}.jpg")
    from PIL import Image

    Image.new("RGB", (20, 10)).save(folder / f"{PRESENT[1]}.png")
    small["image_list"].write_text("\n".join(f"{i}.png" for i in PRESENT))  # the segmentation list's naming
    ds = _build(folder, small, missing="skip")
    assert ds.image_ids == list(PRESENT[:2]) and ds.skipped_ids == [PRESENT[2]]
    assert ds.paths[PRESENT[0]] == folder / f"{PRESENT[0]}.jpg"
    assert ds.paths[PRESENT[1]] == folder / f"{PRESENT[1]}.png" and ds.sizes[PRESENT[1]] == (10, 20)


def test_read_image_list_handles_no_trailing_newline_and_rejects_duplicates(tmp_path: Path) -> None:
    path = tmp_path / "a.lst"
    path.write_text("aa.jpg\nbb.png\n\ncc")
    assert read_image_list(path) == [("aa", "aa.jpg"), ("bb", "bb.png"), ("cc", "cc.jpg")]
    path.write_text("aa.jpg\nbb.jpg\naa.png")
    with pytest.raises(DatasetError, match="image id aa already listed on line 1"):
        read_image_list(path)
    path.write_text("../aa.jpg")
    with pytest.raises(DatasetError, match="not a bare image file name"):
        read_image_list(path)


# -- identity ------------------------------------------------------------------------------
def test_identity_follows_every_file(small: dict[str, Path], images: Path) -> None:
    base = _build(images, small, missing="skip").identity()
    assert base["name"] == "openimages" and base["image_ids"] == [i for i in base["image_ids"] if i in PRESENT]
    assert set(base["files_sha256"]) == {"image_list", "boxes", "labels", "labelmap"}
    assert base == _build(images, small, missing="skip").identity()  # deterministic
    edits = {  # a valid change to each file
        "image_list": lambda p: p.write_text("\n".join(p.read_text().splitlines()[::-1])),
        "boxes": lambda p: p.write_text(p.read_text() + f"{PRESENT[0]},airplane,0.1,0.2,0.1,0.2,0\n"),
        "labels": lambda p: p.write_text(p.read_text() + f"{PRESENT[0]},dog,0\n"),
        "labelmap": lambda p: p.write_text("\n".join(sorted(p.read_text().splitlines(), reverse=True))),
    }
    for key, edit in edits.items():
        original = small[key].read_bytes()
        edit(small[key])
        changed = _build(images, small, missing="skip").identity()
        small[key].write_bytes(original)
        assert changed["files_sha256"][key] != base["files_sha256"][key], key
        assert {k: v for k, v in changed["files_sha256"].items() if k != key} == \
               {k: v for k, v in base["files_sha256"].items() if k != key}, key
        if key == "image_list":
            assert changed["image_ids"] == base["image_ids"][::-1]


# -- bad inputs ------------------------------------------------------------------------------
def test_listed_id_without_annotations_is_named(small: dict[str, Path], images: Path) -> None:
    small["image_list"].write_text(small["image_list"].read_text() + "\nffffffffffffffff.jpg")
    with pytest.raises(DatasetError, match=r"1 listed image id\(s\) have no row in .*boxes.csv.*ffffffffffffffff"):
        _build(images, small, missing="skip")


def test_class_missing_from_labelmap_is_the_readers_error(small: dict[str, Path], images: Path) -> None:
    names = small["labelmap"].read_text().splitlines()
    small["labelmap"].write_text("\n".join(n for n in names if n != "airplane"))
    with pytest.raises(DatasetError, match=r"boxes\.csv:\d+: class 'airplane' is not in the label map \(46 classes\)"):
        _build(images, small, missing="skip")


def test_csv_missing_column_names_the_file(small: dict[str, Path], images: Path) -> None:
    lines = small["labels"].read_text().splitlines()
    small["labels"].write_text("\n".join(",".join(line.split(",")[:2]) for line in lines))
    with pytest.raises(DatasetError, match=r"labels\.csv:1: missing column\(s\) Confidence"):
        _build(images, small, missing="skip")


def test_missing_folder_and_files(small: dict[str, Path], images: Path, tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match="images folder .*nowhere does not exist"):
        _build(tmp_path / "nowhere", small)
    gone = dict(small, boxes=tmp_path / "gone.csv")
    with pytest.raises(DatasetError, match="boxes file .*gone.csv does not exist"):
        _build(images, gone)
    with pytest.raises(DatasetError, match="image list .*empty"):
        small["image_list"].write_text("\n")
        _build(images, small)
    with pytest.raises(DatasetError, match="MPEG VCM folder"):
        OpenImagesVcmDataset(tmp_path / "nowhere", images)
    with pytest.raises(DatasetError, match="subset must be one of"):
        OpenImagesVcmDataset(tmp_path, images, subset="classification")


def test_no_present_image_is_an_error(small: dict[str, Path], tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    with pytest.raises(DatasetError, match="no image selected"):
        _build(tmp_path / "empty", small, missing="skip")


# -- evaluation ------------------------------------------------------------------------------
def test_selected_classes_are_coco_names_after_the_underscore_mapping(vcm: Path) -> None:
    maps = vcm / "labelmaps"
    selected = (maps / "detection-ipsl" / "selected_classes.txt").read_text().splitlines()
    assert len(selected) == 47
    assert set(selected) <= {name.replace(" ", "_") for name in COCO80_NAMES}
    assert "cell_phone" in selected and "traffic_light" in selected
    # the 80-name table shipped with the lists is the project's COCO order (index = contiguous id)
    assert (maps / "detection-ipsl" / "coco_classes.txt").read_text().splitlines() == list(COCO80_NAMES)
    from vcm_plugin.evaluation.oid_annotations import read_label_map

    assert set(read_label_map(maps / "segmentation-dsslic" / "coco_label_map.pbtxt")) == set(selected)


def _gt_detections(sample, shift: float = 0.0) -> Detections:
    boxes = np.array([a["bbox"] for a in sample.annotations], dtype=np.float64) + shift
    labels = [NAME_TO_COCO_ID[a["label"]] for a in sample.annotations]
    return Detections(boxes, np.linspace(0.9, 0.5, len(labels)), labels)


def test_detection_evaluator_scores_ground_truth_as_100(detection: OpenImagesVcmDataset) -> None:
    evaluator = detection.evaluator("detection")
    assert evaluator.iou_type == "bbox" and evaluator.class_names == detection.class_names
    for sample in detection:
        evaluator.process(sample, _gt_detections(sample))
    metrics = evaluator.evaluate()
    assert metrics["oid/mAP50"] == pytest.approx(100.0)
    assert metrics["oid/AP50/airplane"] == pytest.approx(100.0) and np.isnan(metrics["oid/AP50/dog"])

    evaluator.reset()  # a class outside the 47 (bed, COCO id 65) is dropped; a badly placed box costs AP
    for sample in detection:
        dets = _gt_detections(sample, shift=400.0 if sample.image_id == "00b562abdf5766d3" else 0.0)
        extra = Detections(np.vstack([dets.boxes, [[0, 0, 10, 10]]]), np.append(dets.scores, 0.99),
                           np.append(dets.labels, 65))
        evaluator.process(sample, extra)
    assert evaluator.evaluate()["oid/mAP50"] == pytest.approx(200.0 / 3)  # car missed, airplane and person kept


def test_evaluator_uses_the_verified_labels(small: dict[str, Path], images: Path) -> None:
    """A car detection on the airplane image is ignored (car not verified there) until car is verified absent."""
    def car_map(ds: OpenImagesDataset) -> float:
        evaluator = ds.evaluator("detection")
        for sample in ds:
            dets = _gt_detections(sample)
            if sample.image_id == "0001eeaf4aed83f9":
                dets = Detections(np.vstack([dets.boxes, [[0, 0, 50, 50]]]), np.append(dets.scores, 0.99),
                                  np.append(dets.labels, NAME_TO_COCO_ID["car"]))
            evaluator.process(sample, dets)
        return evaluator.evaluate()["oid/AP50/car"]

    assert car_map(_build(images, small, missing="skip")) == pytest.approx(100.0)
    small["labels"].write_text(small["labels"].read_text() + "0001eeaf4aed83f9,car,0\n")
    assert car_map(_build(images, small, missing="skip")) == pytest.approx(50.0)  # FP ranked above the TP


def test_evaluator_tasks(detection: OpenImagesVcmDataset) -> None:
    with pytest.raises(DatasetError, match="no evaluator for task 'classification'"):
        detection.evaluator("classification")
    with pytest.raises(DatasetError, match="not available offline"):
        detection.evaluator("segmentation")


def test_segmentation_subset_without_masks_says_so(vcm: Path, images: Path, tmp_path: Path) -> None:
    folder = tmp_path / "imgs"
    folder.mkdir()
    first = _list_ids(vcm / "segmentation_validation_input_5k.lst")[0]
    shutil.copy(images / "00b562abdf5766d3.jpg", folder / f"{first}.jpg")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ds = OpenImagesVcmDataset(vcm, folder, subset="segmentation", missing="skip")
    assert ds.image_ids == [first] and ds.paths[first].suffix == ".jpg" and "masks" not in ds.files
    assert ds.evaluator("detection").iou_type == "bbox"
    with pytest.raises(DatasetError, match="segmentation_validation_masks_5k.csv.*not available offline"):
        ds.evaluator("segmentation")


def test_segmentation_evaluator_with_the_mask_excerpt(vcm: Path, images: Path, tmp_path: Path) -> None:
    """The 2-row mask excerpt: image 179f6966eec24e2a (1024x683) has one bottle mask; the mask fed back scores 100."""
    from pycocotools import mask as mask_utils

    from vcm_plugin.evaluation.oid_annotations import read_masks_csv

    folder = tmp_path / "imgs"
    folder.mkdir()
    shutil.copy(images / "00b562abdf5766d3.jpg", folder / "179f6966eec24e2a.jpg")  # same 1024x683 size
    masks = vcm / "extra" / "segmentation_validation_masks_5k_2.csv"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ds = OpenImagesVcmDataset(vcm, folder, subset="segmentation", masks=masks, missing="skip")
    assert ds.identity()["files_sha256"]["masks"] and ds.identity()["subset"] == "segmentation"
    sample = ds[0]
    gt = read_masks_csv(masks)["179f6966eec24e2a"][0]
    assert (sample.height, sample.width) == (gt.height, gt.width)
    evaluator = ds.evaluator("segmentation")
    assert evaluator.iou_type == "segm"
    x, y, w, h = mask_utils.toBbox(gt.rle)
    evaluator.process(sample, Detections([[x, y, x + w, y + h]], [0.9], [44], masks=[gt.rle]))  # 44: bottle
    assert evaluator.evaluate()["oid_segm/mAP50"] == pytest.approx(100.0)
