"""The weights search path, SHA-256 checks and safe state-dict loading."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest

from vcm_plugin.errors import TaskModelError, WeightsNotFoundError
from vcm_plugin.weights import (
    ENV_VAR,
    KNOWN_SHA256,
    NotWeightsOnlyError,
    file_sha256,
    find_weights,
    load_state_dict_safely,
    weights_search_path,
)


@pytest.fixture
def folders(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, Path]:
    """explicit, env1, env2 and a fake home (so ~/.cache is inside tmp_path)."""
    out = {name: tmp_path / name for name in ("explicit", "env1", "env2", "home")}
    for path in out.values():
        path.mkdir()
    monkeypatch.setenv("HOME", str(out["home"]))
    monkeypatch.setenv(ENV_VAR, os.pathsep.join([str(out["env1"]), str(out["env2"])]))
    out["cache"] = out["home"] / ".cache" / "vcm_plugin" / "weights"
    out["cache"].mkdir(parents=True)
    return out


def _put(folder: Path, name: str = "w.pt", content: bytes = b"x") -> Path:
    path = folder / name
    path.write_bytes(content)
    return path


def test_search_order(folders: dict[str, Path]) -> None:
    assert weights_search_path([folders["explicit"]]) == [folders[k] for k in ("explicit", "env1", "env2", "cache")]
    _put(folders["cache"])
    assert find_weights("w.pt", [folders["explicit"]]) == folders["cache"] / "w.pt"
    _put(folders["env2"])
    assert find_weights("w.pt", [folders["explicit"]]) == folders["env2"] / "w.pt"
    _put(folders["env1"])
    assert find_weights("w.pt", [folders["explicit"]]) == folders["env1"] / "w.pt"
    _put(folders["explicit"])
    assert find_weights("w.pt", [str(folders["explicit"])]) == folders["explicit"] / "w.pt"


def test_absolute_path_is_taken_as_is(folders: dict[str, Path], tmp_path: Path) -> None:
    path = _put(tmp_path, "elsewhere.pt")
    assert find_weights(path) == path
    with pytest.raises(WeightsNotFoundError, match="elsewhere2.pt"):
        find_weights(tmp_path / "elsewhere2.pt")


def test_missing_file_names_every_folder_and_the_fix(folders: dict[str, Path], tmp_path: Path) -> None:
    ghost = tmp_path / "not-there"
    with pytest.raises(WeightsNotFoundError) as info:
        find_weights("yolov9z.pt", [folders["explicit"], ghost])
    message = str(info.value)
    assert "yolov9z.pt" in message and ENV_VAR in message
    for key in ("explicit", "env1", "env2", "cache"):
        assert str(folders[key]) in message
    assert f"{ghost} (no such folder)" in message
    assert isinstance(info.value, FileNotFoundError) and isinstance(info.value, TaskModelError)


def test_sha256_checked(folders: dict[str, Path]) -> None:
    path = _put(folders["explicit"], content=b"weights")
    good = file_sha256(path)
    assert good == hashlib.sha256(b"weights").hexdigest()
    assert find_weights("w.pt", [folders["explicit"]], sha256=good.upper()) == path
    bad = "0" * 64
    with pytest.raises(TaskModelError) as info:
        find_weights("w.pt", [folders["explicit"]], sha256=bad)
    assert str(path) in str(info.value) and bad in str(info.value) and good in str(info.value)


def test_known_hashes_match_the_shared_files(shared: Path) -> None:
    for name, digest in KNOWN_SHA256.items():
        assert find_weights(name, [shared / "weights"], sha256=digest).name == name
    sums = dict(line.split()[::-1] for line in (shared / "weights" / "SHA256SUMS").read_text().splitlines())
    assert all(sums[name] == digest for name, digest in KNOWN_SHA256.items())


def test_load_state_dict_safely(shared: Path, tmp_path: Path) -> None:
    state = load_state_dict_safely(shared / "weights" / "yolov5n_coco_state_dict.pt")
    assert len(state) == 349 and tuple(state["model.0.conv.weight"].shape) == (16, 3, 6, 6)

    truncated = tmp_path / "truncated.pt"
    truncated.write_bytes((shared / "weights" / "yolov5n_coco_state_dict.pt").read_bytes()[:100_000])
    with pytest.raises(TaskModelError, match="truncated.pt"):
        load_state_dict_safely(truncated)

    with pytest.raises(NotWeightsOnlyError, match=r"yolov5n\.pt.*models\.yolo\.Model"):
        load_state_dict_safely(shared / "weights" / "yolov5n.pt")

    with pytest.raises(TaskModelError, match="WEIGHTS.md"):
        load_state_dict_safely(shared / "weights" / "WEIGHTS.md")


class _Evil:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):  # noqa: ANN204
        return (os.system, (f"touch {self.marker}",))


def test_pickled_code_is_never_run(tmp_path: Path) -> None:
    import torch

    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pt"
    torch.save({"model.0.conv.weight": torch.zeros(1), "payload": _Evil(marker)}, path)
    with pytest.raises(NotWeightsOnlyError, match="evil.pt"):
        load_state_dict_safely(path)
    assert not marker.exists()
