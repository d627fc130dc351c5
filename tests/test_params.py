"""Typed plugin parameters: values are checked against the plugin's annotations before it is built."""

from __future__ import annotations

import pytest

from vcm_plugin import get_codec
from vcm_plugin.errors import VcmError
from vcm_plugin.tasks.registry import get_task_model


@pytest.mark.parametrize("name, params, words", [
    ("vvc", {"threads": "2"}, ["'vvc'", "parameter 'threads'", "expected int, got str '2'"]),
    ("vvc", {"threads": True}, ["parameter 'threads'", "expected int, got bool True"]),
    ("vvc", {"preset": "ludicrous"}, ["parameter 'preset'", "'medium'", "got 'ludicrous'"]),
    ("jpeg", {"optimize": 1}, ["'jpeg'", "parameter 'optimize'", "expected true or false, got int 1"]),
    ("jpeg", {"subsampling": 420}, ["parameter 'subsampling'", "expected str, got int 420"]),
])
def test_a_wrong_type_is_refused_naming_the_codec_and_parameter(name: str, params: dict, words: list[str]) -> None:
    with pytest.raises(VcmError) as info:
        get_codec(name, **params)
    for word in words:
        assert word in str(info.value), str(info.value)


def test_values_of_the_right_type_are_taken() -> None:
    assert get_codec("vvc", threads=2, preset="faster").threads == 2
    model = get_task_model("yolov5", conf_threshold=1)  # an int is a valid float
    assert model.conf_threshold == 1


def test_a_task_model_parameter_of_the_wrong_type_is_refused() -> None:
    with pytest.raises(VcmError, match=r"parameter 'img_size': expected int, got str '640'"):
        get_task_model("yolov5", img_size="640")


def test_quality_range_is_the_instances() -> None:
    codec = get_codec("compressai")  # the project-zoo family: 4 trained qualities
    assert (codec.quality_range.minimum, codec.quality_range.maximum) == (1, 4)
    assert type(codec).quality_range.maximum == 8  # the class allows more for other models
