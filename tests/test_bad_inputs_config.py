"""Reliability of configs (issue 21): YAML alias bombs, override errors and removals, paths
relative to the config file, nothing created before the preflight, skipped images reported.

- `yaml-alias-bomb`: a 10^7-leaf "billion laughs" config fails in well under a second
  (it took minutes and gigabytes when expanded by OmegaConf), naming the file and the limit;
  recursive aliases and oversized files too.
- `override-*`: an error caused by a ``key=value`` override names the override, not the file;
  ``codecs.<label>=null`` / ``tasks.<label>=null`` remove an entry; removing an anchor codec
  is an error naming the override and the anchor.
- `paths-*`: relative paths written in a config are relative to the config's folder (run
  from any working directory); override paths and ``output`` are relative to the working
  directory; a run whose preflight fails (missing weights) creates no output folder.
- `missing-skip-*`: ``dataset.missing: skip`` is one ``vcm: warning: ...`` line (a log
  record, no Python warning), and the skipped images reach results.csv and bd_rate.md.
"""

from __future__ import annotations

import csv
import json
import shutil
import time
from pathlib import Path

import pytest
from test_bad_inputs import NullDetector  # a registered detector that finds nothing, instantly
from test_config import BASE

from vcm_plugin import QualityError
from vcm_plugin.cli import main
from vcm_plugin.config import ConfigError, load_config
from vcm_plugin.errors import TaskModelError
from vcm_plugin.pipeline.run import run
from vcm_plugin.safe_yaml import MAX_NODES, YAMLLimitError, safe_load
from vcm_plugin.sample import coco_annotations, coco_images_dir

ROOT = Path(__file__).resolve().parents[1]


def write(folder: Path, text: str, name: str = "cfg.yaml") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    path.write_text(text)
    return path


# =====================================================================================
# YAML size limits
# =====================================================================================
def alias_bomb(levels: int) -> str:
    """A config whose last key expands to 10**levels leaves (a few hundred bytes of text)."""
    lines = ["l0: &l0 [" + ", ".join(["lol"] * 10) + "]"]
    lines += [f"l{i}: &l{i} [" + ", ".join([f"*l{i - 1}"] * 10) + "]" for i in range(1, levels)]
    return BASE + "\n".join(lines) + "\n"


@pytest.mark.parametrize("case", [pytest.param(None, id="yaml-alias-bomb")])
def test_alias_bomb_fails_fast_naming_file_and_limit(case: None, tmp_path: Path) -> None:
    path = write(tmp_path, alias_bomb(7))  # 10^7 leaves
    started = time.perf_counter()
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert time.perf_counter() - started < 1.0
    message = str(info.value)
    assert str(path) in message and f"{MAX_NODES:,} nodes" in message, message


def test_yaml_limits_in_safe_load(tmp_path: Path) -> None:
    assert safe_load("a: &x {b: 1}\nc: *x\nd: {<<: *x, e: 4:2:0}\n") == \
        {"a": {"b": 1}, "c": {"b": 1}, "d": {"b": 1, "e": "4:2:0"}}  # ordinary aliases still work
    with pytest.raises(YAMLLimitError, match="recursive alias \\*x"):
        safe_load("a: &x [1, *x]\n")
    with pytest.raises(YAMLLimitError, match="more than 1,000 nodes"):
        safe_load("[" + ", ".join(["1"] * 1000) + "]", max_nodes=1000)
    with pytest.raises(YAMLLimitError, match="characters, more than the limit of 100"):
        safe_load("a: " + "x" * 200, max_chars=100)
    big = tmp_path / "big.yaml"
    with open(big, "w") as fh:
        fh.write(BASE + "pad: '")
        fh.write("x" * 10_000_001)
        fh.write("'\n")
    with pytest.raises(ConfigError, match="big.yaml: .* bytes, more than the limit"):
        load_config(big)


# =====================================================================================
# Overrides
# =====================================================================================
@pytest.mark.parametrize(
    "overrides, error, expected",
    [
        pytest.param(["dataset.max_imgs=3"], ConfigError,
                     "override 'dataset.max_imgs=3' (on {path}): dataset: unknown key 'max_imgs'; "
                     "did you mean 'max_images'?",
                     id="override-unknown-dataset-key"),
        pytest.param(["codecs.vvc.presett=faster"], ConfigError,
                     "override 'codecs.vvc.presett=faster' (on {path}): codecs.vvc: unknown key 'presett'; "
                     "did you mean 'preset'",
                     id="override-unknown-codec-param"),
        pytest.param(["jobs=1", "dataset.max_images=abc"], ConfigError,
                     "override 'dataset.max_images=abc' (on {path}): dataset.max_images", id="override-wrong-type"),
        pytest.param(["anchors=[hevc]"], ConfigError, "override 'anchors=[hevc]' (on {path}): anchors: ",
                     id="override-anchor-not-a-codec"),
        pytest.param(["codecs.vvc.qualities=[99]"], QualityError, "override 'codecs.vvc.qualities=[99]' (on {path}): ",
                     id="override-quality-out-of-range"),
    ],
)
def test_override_errors_name_the_override(overrides: list[str], error: type[Exception], expected: str,
                                           tmp_path: Path) -> None:
    path = write(tmp_path, BASE)
    with pytest.raises(error) as info:
        load_config(path, overrides)
    # the override is at fault, not the file (named for context only)
    assert str(info.value).startswith(expected.format(path=path)), str(info.value)


def test_file_errors_still_name_the_file(tmp_path: Path) -> None:
    path = write(tmp_path, BASE.replace("preset: medium", "presett: medium"))
    with pytest.raises(ConfigError) as info:
        load_config(path, ["dataset.max_images=3"])  # an unrelated, valid override
    assert str(info.value).startswith(f"{path}: codecs.vvc: unknown key 'presett'"), str(info.value)


@pytest.mark.parametrize("case", [pytest.param(None, id="override-remove-entry")])
def test_override_null_removes_a_codec_or_task(case: None, tmp_path: Path) -> None:
    path = write(tmp_path, BASE)
    config = load_config(path, ["codecs.jpeg=null"])
    assert list(config.codecs) == ["vvc"] and config.anchors == ["vvc"]
    config = load_config(path, ["codecs.vvc=null", "anchors=[jpeg]"])
    assert list(config.codecs) == ["jpeg"] and config.anchors == ["jpeg"]
    config = load_config(path, ["tasks.extra={model: yolov5}", "tasks.detection=null"])
    assert list(config.tasks) == ["extra"]
    with pytest.raises(ConfigError, match="override 'codecs.nope=null': there is no codecs entry 'nope' to remove "
                                          "\\(codecs: jpeg, vvc\\)"):
        load_config(path, ["codecs.nope=null"])
    with pytest.raises(ConfigError, match="override 'tasks.detection=null' \\(on .*cfg.yaml\\): tasks: "):
        load_config(path, ["tasks.detection=null"])  # no task left


@pytest.mark.parametrize("case", [pytest.param(None, id="override-remove-anchor")])
def test_removing_an_anchor_codec_names_both(case: None, tmp_path: Path) -> None:
    path = write(tmp_path, BASE)
    with pytest.raises(ConfigError) as info:
        load_config(path, ["codecs.vvc=null"])
    message = str(info.value)
    assert "override 'codecs.vvc=null' removes codec 'vvc', which is an anchor (anchors: [vvc])" in message
    assert "anchors=[]" in message


# =====================================================================================
# Paths relative to the config file; nothing created before the preflight
# =====================================================================================
def coco_folder(folder: Path, drop: int = 0) -> tuple[Path, list[int]]:
    """A COCO dataset folder (data/val2017, data/ann.json) from the 6 sample images, ``drop`` files removed."""
    images = folder / "data" / "val2017"
    shutil.copytree(coco_images_dir(), images)
    shutil.copy(coco_annotations(), folder / "data" / "ann.json")
    data = json.loads(coco_annotations().read_text())
    dropped = [im["id"] for im in data["images"][:drop]]
    for im in data["images"][:drop]:
        (images / im["file_name"]).unlink()
    return folder, dropped


def run_text(task: str, extra: str = "") -> str:
    return ("name: moved\noutput: outputs/moved\n"
            "dataset: {name: coco, images_dir: data/val2017, annotations: data/ann.json, max_images: 2}\n"
            f"tasks: {{detection: {task}}}\n"
            "weights: {search_path: [weights]}\n"
            "codecs: {jpeg: {qualities: [50]}}\njobs: 1\n" + extra)


@pytest.mark.parametrize("case", [pytest.param(None, id="paths-relative-to-config")])
def test_relative_paths_resolve_against_the_config_folder(case: None, tmp_path: Path,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    configs, _ = coco_folder(tmp_path / "project" / "configs")
    path = write(configs, run_text(f"{{model: {NullDetector.name}}}"))
    cwd = tmp_path / "elsewhere"
    cwd.mkdir()
    monkeypatch.chdir(cwd)
    config = load_config(path)
    params = config.dataset_params()
    assert params["images_dir"] == str(configs / "data" / "val2017")
    assert params["annotations"] == str(configs / "data" / "ann.json")
    assert config.weights.search_path == [str(configs / "weights")]
    assert config.output == "outputs/moved"  # outputs: relative to the working directory, as --output
    moved = load_config(path, ["dataset.images_dir=mine", "weights.search_path=[w]"])
    assert moved.dataset_params()["images_dir"] == "mine"  # paths typed on the command line: working directory
    assert moved.weights.search_path == ["w"]

    summary = run(config, quiet=True)
    assert summary.units_failed == 0 and summary.units_total == 2 * 2
    assert (cwd / "outputs" / "moved" / "results.csv").is_file()


@pytest.mark.parametrize("case", [pytest.param(None, id="paths-shipped-configs")])
def test_shipped_configs_resolve_from_any_folder(case: None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("VCM_SHARED", raising=False)
    monkeypatch.chdir(tmp_path)
    shared = ROOT.parent / "shared"  # as the configs name it: a symlinked ../shared is not followed
    quickstart = load_config(ROOT / "eval_configs" / "quickstart.yaml")
    assert [Path(p) for p in quickstart.weights.search_path] == [shared / "weights"]
    coco = load_config(ROOT / "eval_configs" / "coco_shared.yaml")
    assert Path(coco.dataset_params()["images_dir"]) == shared / "data" / "coco" / "val2017"
    openimages = load_config(ROOT / "eval_configs" / "openimages_detection.yaml")
    assert all(Path(p).is_file() for p in openimages.published_anchors)


@pytest.mark.parametrize("case", [pytest.param(None, id="paths-preflight-creates-nothing")])
def test_failing_preflight_creates_no_output_folder(case: None, tmp_path: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    configs, _ = coco_folder(tmp_path / "configs")
    path = write(configs, run_text("{model: yolov5, weights: no-such-weights.pt}"))
    cwd = tmp_path / "elsewhere"
    cwd.mkdir()
    monkeypatch.chdir(cwd)
    monkeypatch.delenv("VCM_WEIGHTS", raising=False)
    with pytest.raises(TaskModelError) as info:
        run(load_config(path), quiet=True)
    assert "no-such-weights.pt" in str(info.value) and str(configs / "weights") in str(info.value)
    assert list(cwd.iterdir()) == []  # no outputs/moved, no config.yaml


# =====================================================================================
# dataset.missing: skip
# =====================================================================================
@pytest.mark.parametrize("case", [pytest.param(None, id="missing-skip-reported")])
def test_skipped_images_are_logged_and_reported(case: None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    configs, dropped = coco_folder(tmp_path / "configs", drop=2)
    path = write(configs, run_text(f"{{model: {NullDetector.name}}}").replace("max_images: 2", "missing: skip"))
    monkeypatch.chdir(tmp_path)
    with NoPythonWarnings():
        assert main(["run", str(path), "--output", "out"]) == 0
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if "skipped" in line]
    assert len(lines) == 1 and lines[0].startswith("vcm: warning: coco dataset: skipped 2 image(s)"), err
    assert "UserWarning" not in err and "warnings.warn" not in err
    with open(tmp_path / "out" / "results.csv") as fh:
        rows = list(csv.DictReader(fh))
    assert rows and all(r["images_skipped"] == "2" and r["images"] == "4" for r in rows)
    md = (tmp_path / "out" / "bd_rate.md").read_text()
    assert "2 image(s) listed by the dataset were skipped" in md
    assert all(str(i) in md for i in dropped)


class NoPythonWarnings:
    """Fails when a Python warning (``warnings.warn``) is emitted inside the block."""

    def __enter__(self) -> None:
        import warnings

        self._catch = warnings.catch_warnings(record=True)
        self._caught = self._catch.__enter__()
        warnings.simplefilter("always")

    def __exit__(self, *exc: object) -> None:
        self._catch.__exit__(*exc)
        skipped = [str(w.message) for w in self._caught if "skipped" in str(w.message)]
        assert not skipped, skipped


def test_a_mandatory_value_left_unset_names_the_key(tmp_path: Path) -> None:
    """``???`` (OmegaConf's mandatory value, e.g. fcm-vvc's value_range in eval_configs/fcm_openimages_x101.yaml)
    left unset is an error naming the key and how to give it; an override fills it."""
    path = write(tmp_path, BASE.replace("preset: medium", "preset: '???'"))
    with pytest.raises(ConfigError, match=r"codecs\.vvc\.preset is mandatory and left unset .*codecs\.vvc\.preset="):
        load_config(path)
    assert load_config(path, ["codecs.vvc.preset=fast"]).codec_params("vvc") == ("vvc", {"preset": "fast"})


def test_the_fcm_config_needs_its_value_range() -> None:
    config = Path(__file__).resolve().parents[1] / "eval_configs" / "fcm_openimages_x101.yaml"
    with pytest.raises(ConfigError, match=r"codecs\.fcm_ctc\.value_range is mandatory"):
        load_config(config, check_plugins=False)
