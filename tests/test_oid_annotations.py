"""Readers of Open Images annotation, label-map and prediction files (real MPEG VCM files + bad inputs)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from pycocotools import mask as mask_utils

from vcm_plugin.evaluation.base import EvaluationError
from vcm_plugin.evaluation.oid_annotations import (
    AnnotationError,
    DetBox,
    DetMask,
    GTBox,
    decode_mask_string,
    encode_mask_string,
    read_boxes_csv,
    read_class_descriptions,
    read_detections_csv,
    read_label_map,
    read_labels_csv,
    read_mask_detections_csv,
    read_masks_csv,
    write_detections_csv,
    write_mask_detections_csv,
)


@pytest.fixture(scope="module")
def vcm(shared: Path) -> Path:
    """The MPEG VCM OpenImages files in ../shared (the test skips without them)."""
    return shared / "data" / "openimages" / "mpeg-vcm"


def write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


# -- real files -------------------------------------------------------------------------------
def test_real_detection_boxes_and_labels(vcm):
    classes = set(read_label_map(vcm / "labelmaps" / "detection-ipsl" / "selected_classes.txt"))
    assert len(classes) == 47 and "cell_phone" in classes
    boxes = read_boxes_csv(vcm / "detection_validation_5k_bbox.csv", classes)
    assert len(boxes) == 5000
    assert sum(map(len, boxes.values())) == 12641
    assert sum(b.is_group_of for v in boxes.values() for b in v) == 1118
    # first data row: 0001eeaf4aed83f9,airplane,XMin 0.022673031,XMax 0.9642004999999999,YMin 0.07103825,YMax 0.80054647
    assert boxes["0001eeaf4aed83f9"] == [GTBox("airplane", 0.022673031, 0.07103825, 0.9642004999999999, 0.80054647,
                                               False)]
    labels = read_labels_csv(vcm / "detection_validation_labels_5k.csv", classes)
    assert len(labels) == 5000
    assert sum(len(v.positive) for v in labels.values()) == 5989
    assert sum(len(v.negative) for v in labels.values()) == 3077


def test_real_label_maps(vcm):
    pbtxt = read_label_map(vcm / "labelmaps" / "detection-ipsl" / "coco_label_map.pbtxt")
    assert len(pbtxt) == 50 and pbtxt[:3] == ["person", "bird", "car"]
    selected = read_label_map(vcm / "labelmaps" / "detection-ipsl" / "selected_classes.txt")  # no trailing newline
    assert set(selected) <= set(pbtxt) and set(pbtxt) - set(selected) == {"bed", "microwave", "oven"}
    seg = read_label_map(vcm / "labelmaps" / "segmentation-dsslic" / "coco_label_map.pbtxt")
    assert sorted(seg) == sorted(selected)


def test_real_mask_excerpt_decodes_to_the_stated_size_and_box(vcm):
    masks = read_masks_csv(vcm / "extra" / "segmentation_validation_masks_5k_2.csv")
    assert sorted(masks) == ["179f6966eec24e2a", "eaa812f8291ce366"]
    bottle, = masks["179f6966eec24e2a"]
    person, = masks["eaa812f8291ce366"]
    assert (bottle.label, bottle.width, bottle.height) == ("bottle", 1024, 683)
    assert (person.label, person.width, person.height) == ("person", 972, 1024)
    assert bottle.mask_path == "179f6966eec24e2a_m04dr76w_26cfeffb.png"
    for m in (bottle, person):
        pixels = mask_utils.decode(m.rle)
        assert pixels.shape == (m.height, m.width) and pixels.any()
        ys, xs = np.nonzero(pixels)
        mask_box = np.array([xs.min() / m.width, ys.min() / m.height, (xs.max() + 1) / m.width,
                             (ys.max() + 1) / m.height])
        # the annotated box and the mask's extent agree to within 1 % of the image (about 8 px here)
        np.testing.assert_allclose(mask_box, [m.xmin, m.ymin, m.xmax, m.ymax], atol=0.01)


# -- column order, extra columns, MIDs -----------------------------------------------------------
def test_columns_found_by_header_in_any_order(tmp_path):
    path = write(tmp_path, "b.csv", "Source,IsGroupOf,YMax,XMin,LabelName,YMin,ImageID,XMax\n"
                                    "human,1,0.9,0.1,cat,0.2,img1,0.5\n")
    assert read_boxes_csv(path) == {"img1": [GTBox("cat", 0.1, 0.2, 0.5, 0.9, True)]}


def test_mids_translated_with_class_descriptions(tmp_path):
    desc = write(tmp_path, "class-descriptions-boxable.csv", '/m/01g317,Person\n/m/0k4j,"Car, small"\n')
    assert read_class_descriptions(desc) == {"/m/01g317": "Person", "/m/0k4j": "Car, small"}
    assert read_label_map(desc) == ["Person", "Car, small"]
    mids = read_class_descriptions(desc)
    boxes = write(tmp_path, "b.csv", "ImageID,Source,LabelName,Confidence,XMin,XMax,YMin,YMax,IsOccluded,"
                                     "IsTruncated,IsGroupOf,IsDepiction,IsInside\n"
                                     "img1,xclick,/m/0k4j,1,0.1,0.5,0.2,0.9,0,0,-1,0,0\n")
    assert read_boxes_csv(boxes, set(mids.values()), mids) == {
        "img1": [GTBox("Car, small", 0.1, 0.2, 0.5, 0.9, True)]}  # IsGroupOf -1 ("unknown") is truthy, as officially
    labels = write(tmp_path, "l.csv", "ImageID,Source,LabelName,Confidence\nimg1,human,/m/01g317,0\n")
    assert read_labels_csv(labels, None, mids)["img1"].negative == {"Person"}
    unknown = write(tmp_path, "u.csv", "ImageID,LabelName,Confidence\nimg1,/m/999,1\n")
    with pytest.raises(AnnotationError, match=r"u\.csv:2: LabelName '/m/999' is not in the class descriptions"):
        read_labels_csv(unknown, None, mids)


def test_pbtxt_ordered_by_id_and_display_name_ignored(tmp_path):
    path = write(tmp_path, "m.pbtxt", 'item {\n  name: "/m/02"\n  id: 2\n  display_name: "Dog"\n}\n'
                                      "item { name: '/m/01' id: 1 display_name: 'Cat' }")
    assert read_label_map(path) == ["/m/01", "/m/02"]
    dup = write(tmp_path, "d.pbtxt", 'item { name: "a" id: 1 }\nitem { name: "b" id: 1 }\n')
    with pytest.raises(AnnotationError, match=r"d\.pbtxt:2: id 1 already used on line 1"):
        read_label_map(dup)


def test_txt_label_map_without_trailing_newline_and_duplicates(tmp_path):
    assert read_label_map(write(tmp_path, "a.txt", "cat\n\ndog")) == ["cat", "dog"]
    with pytest.raises(AnnotationError, match="'cat' appears twice"):
        read_label_map(write(tmp_path, "b.txt", "cat\ncat\n"))


# -- bad inputs ---------------------------------------------------------------------------------------
def test_missing_columns_name_file_and_header_line(tmp_path):
    path = write(tmp_path, "b.csv", "ImageID,LabelName,XMin,XMax,YMin\nimg1,cat,0,1,0\n")
    with pytest.raises(AnnotationError, match=r"b\.csv:1: missing column\(s\) YMax, IsGroupOf"):
        read_boxes_csv(path)
    assert issubclass(AnnotationError, EvaluationError)


@pytest.mark.parametrize(("row", "message"), [
    ("img1,cat,0.1,1.5,0.2,0.9,0", r"b\.csv:3: XMax 1.5 is outside \[0, 1\]"),
    ("img1,cat,-0.01,0.5,0.2,0.9,0", r"b\.csv:3: XMin -0.01 is outside \[0, 1\]"),
    ("img1,cat,0.1,abc,0.2,0.9,0", r"b\.csv:3: XMax 'abc' is not a number"),
    ("img1,cat,0.1,0.5,0.2,nan,0", r"b\.csv:3: YMax 'nan' is not finite"),
    ("img1,cat,0.6,0.5,0.2,0.9,0", r"b\.csv:3: inverted box"),
    ("img1,cat,0.1,0.5,0.2,0.9,0.5", r"b\.csv:3: IsGroupOf '0.5' is not an integer"),
    ("img1,horse,0.1,0.5,0.2,0.9,0", r"b\.csv:3: class 'horse' is not in the label map \(2 classes\)"),
    ("img1,cat,0.1,0.5", r"b\.csv:3: 4 fields, the header has 7"),
])
def test_bad_box_rows_name_file_and_line(tmp_path, row, message):
    path = write(tmp_path, "b.csv", f"ImageID,LabelName,XMin,XMax,YMin,YMax,IsGroupOf\nimg0,cat,0,1,0,1,0\n{row}\n")
    with pytest.raises(AnnotationError, match=message):
        read_boxes_csv(path, {"cat", "dog"})


def test_tiny_overshoot_is_clipped_and_zero_area_boxes_are_kept(tmp_path):
    path = write(tmp_path, "b.csv", "ImageID,LabelName,XMin,XMax,YMin,YMax,IsGroupOf\n"
                                    "img1,cat,-0.0000005,1.0000005,0.2,0.9,0\n"
                                    "img1,cat,0.3,0.3,0.2,0.9,0\n")
    boxes = read_boxes_csv(path)["img1"]
    assert boxes[0] == GTBox("cat", 0.0, 0.2, 1.0, 0.9, False)
    assert boxes[1] == GTBox("cat", 0.3, 0.2, 0.3, 0.9, False)  # zero area: kept (never matchable)


def test_bad_label_rows(tmp_path):
    path = write(tmp_path, "l.csv", "ImageID,LabelName,Confidence\nimg1,cat,1\nimg1,dog,0.5\n")
    with pytest.raises(AnnotationError, match=r"l\.csv:3: Confidence '0.5' is neither 1"):
        read_labels_csv(path)
    path = write(tmp_path, "m.csv", "ImageID,LabelName,Confidence\nimg1,cat,1\nimg1,cow,0\n")
    with pytest.raises(AnnotationError, match=r"m\.csv:3: class 'cow' is not in the label map"):
        read_labels_csv(path, {"cat"})


def test_missing_and_empty_files(tmp_path):
    with pytest.raises(AnnotationError, match=r"nope\.csv: cannot read"):
        read_boxes_csv(tmp_path / "nope.csv")
    with pytest.raises(AnnotationError, match=r"e\.csv:1: empty file"):
        read_labels_csv(write(tmp_path, "e.csv", ""))
    with pytest.raises(AnnotationError, match="no class names"):
        read_label_map(write(tmp_path, "e.txt", "\n\n"))


# -- predictions and masks ------------------------------------------------------------------------
def test_detections_round_trip(tmp_path):
    dets = {"img1": [DetBox("cat", 0.9, 0.1, 0.2, 0.3, 0.4), DetBox("dog", 1 / 3, -0.01, 0.0, 1.02, 1.0)],
            "img2": [DetBox("cell_phone", 0.5, 0.0, 0.0, 0.5, 0.5)]}
    path = tmp_path / "d.csv"
    write_detections_csv(path, dets)
    assert path.read_text().splitlines()[0] == "ImageID,LabelName,Score,XMin,YMin,XMax,YMax"
    assert read_detections_csv(path) == dets  # exact floats; predictions may leave the image
    bad = write(tmp_path, "bad.csv", "ImageID,LabelName,Score,XMin,YMin,XMax,YMax\nimg1,cat,high,0,0,1,1\n")
    with pytest.raises(AnnotationError, match=r"bad\.csv:2: Score 'high' is not a number"):
        read_detections_csv(bad)


def test_mask_strings_and_mask_files(tmp_path):
    pixels = np.zeros((6, 8), np.uint8)
    pixels[1:4, 2:7] = 1
    counts = mask_utils.encode(np.asfortranarray(pixels))["counts"].decode("ascii")
    assert decode_mask_string(encode_mask_string(counts)) == counts
    dets = {"img1": [DetMask("cat", 0.75, 8, 6, counts)]}
    path = tmp_path / "dm.csv"
    write_mask_detections_csv(path, dets)
    assert read_mask_detections_csv(path) == dets
    np.testing.assert_array_equal(mask_utils.decode(read_mask_detections_csv(path)["img1"][0].rle), pixels)

    header = "ImageID,LabelName,ImageWidth,ImageHeight,XMin,YMin,XMax,YMax,IsGroupOf,Mask,MaskPath\n"
    good = write(tmp_path, "m.csv", header + f"img1,cat,8,6,0.25,0.1667,0.875,0.6667,0,{encode_mask_string(counts)},"
                                             "a.png\nimg1,cat,8,6,0,0,1,1,1,,b.png\n")
    first, second = read_masks_csv(good)["img1"]
    assert first.counts == counts and first.rle == {"size": [6, 8], "counts": counts}
    assert second.counts is None and second.rle is None and second.is_group_of  # a box without a mask
    corrupt = write(tmp_path, "c.csv", header + "img1,cat,8,6,0,0,1,1,0,@@notbase64@@,a.png\n")
    with pytest.raises(AnnotationError, match=r"c\.csv:2: Mask: not a base64\(zlib\(COCO RLE\)\) mask"):
        read_masks_csv(corrupt)
    too_big = write(tmp_path, "t.csv", header + f"img1,cat,2,2,0,0,1,1,0,{encode_mask_string(counts)},a.png\n")
    with pytest.raises(AnnotationError, match=r"t\.csv:2: Mask covers more than the stated 2x2 image"):
        read_masks_csv(too_big)
    png_only = write(tmp_path, "p.csv", "ImageID,LabelName,ImageWidth,ImageHeight,XMin,YMin,XMax,YMax,IsGroupOf,"
                                        "MaskPath\nimg1,cat,8,6,0,0,1,1,0,a.png\n")
    with pytest.raises(AnnotationError, match=r"p\.csv:1: missing column\(s\) Mask"):
        read_masks_csv(png_only)
