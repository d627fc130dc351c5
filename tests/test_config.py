"""Run configs: safe YAML, overrides, schema validation with the nearest valid key."""

from __future__ import annotations

from pathlib import Path

import pytest

from vcm_plugin import QualityError
from vcm_plugin.config import ConfigError, load_config

ROOT = Path(__file__).resolve().parents[1]
QUICKSTART = ROOT / "eval_configs" / "quickstart.yaml"


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "cfg.yaml"
    path.write_text(text)
    return path


BASE = """
dataset: {name: sample}
tasks: {detection: {model: yolov5}}
codecs:
  jpeg: {qualities: [10, 50]}
  vvc: {qualities: [42, 32], preset: medium}
anchors: [vvc]
"""


def test_shipped_configs_validate() -> None:
    mandatory = {"fcm_openimages_x101.yaml": ["codecs.fcm_ctc.value_range=[-20,40]"]}  # left ??? by the config
    for path in sorted((ROOT / "eval_configs").glob("*.yaml")):
        config = load_config(path, mandatory.get(path.name))
        assert config.codecs and config.tasks, path


def test_overrides_apply_before_validation(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, BASE), ["codecs.vvc.preset=faster", "dataset.max_images=2", "jobs=1"])
    assert config.codec_params("vvc") == ("vvc", {"preset": "faster"})
    assert config.dataset.max_images == 2 and config.jobs == 1


def test_env_interpolation(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("VCM_TEST_OUT", "/tmp/somewhere")
    config = load_config(write(tmp_path, BASE + "output: ${oc.env:VCM_TEST_OUT}/run\n"))
    assert config.output == "/tmp/somewhere/run"


@pytest.mark.parametrize(
    "text, overrides, expected",
    [
        (BASE.replace("dataset:", "datset:"), [], "unknown key 'datset'; did you mean 'dataset'"),
        (BASE, ["codecs.vvc.presett=faster"], "codecs.vvc: unknown key 'presett'; did you mean 'preset'"),
        (BASE, ["codecs.jpeg.qualitys=[1]"], "did you mean 'qualities'"),
        (BASE, ["tasks.detection.img_sz=320"], "tasks.detection: unknown key 'img_sz'; did you mean 'img_size'"),
        (BASE, ["dataset.max_images=abc"], "dataset.max_images"),
        (BASE, ["anchors=[hevc]"], "anchor 'hevc' is not one of the codecs"),
        (BASE, ["codecs.jpeg.scales=[1.5]"], "scale 1.5"),
        (BASE.replace("tasks: {detection: {model: yolov5}}", ""), [], "missing key 'tasks'"),
        (BASE, ["codecs.vvc.preset"], "expected key=value"),
    ],
)
def test_bad_configs_name_the_key(tmp_path: Path, text: str, overrides: list[str], expected: str) -> None:
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as info:
        load_config(path, overrides)
    assert expected in str(info.value)
    assert str(path) in str(info.value) or "override" in str(info.value)


def test_quality_out_of_range_names_codec(tmp_path: Path) -> None:
    with pytest.raises(QualityError, match="'vvc'.*99"):
        load_config(write(tmp_path, BASE), ["codecs.vvc.qualities=[99]"])


def test_unsafe_yaml_tag_is_refused(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    path = write(tmp_path, BASE + f"evil: !!python/object/apply:os.system ['touch {marker}']\n")
    with pytest.raises(ConfigError, match="not valid safe YAML"):
        load_config(path)
    assert not marker.exists()


def test_missing_and_non_mapping_files(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="nope.yaml"):
        load_config(tmp_path / "nope.yaml")
    with pytest.raises(ConfigError, match="top level must be a mapping"):
        load_config(write(tmp_path, "- a\n- b\n"))
