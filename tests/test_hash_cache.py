"""The SHA-256 of weights and other large files, hashed once per file state (in the process and across runs)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from vcm_plugin import hashing
from vcm_plugin.hashing import PERSIST_MIN_BYTES, cached_file_sha256, file_sha256


@pytest.fixture
def counted(monkeypatch, tmp_path: Path) -> list[str]:
    """The hash cache in a tmp file, the in-process memory empty, and every real hashing recorded."""
    monkeypatch.setenv(hashing.HASH_CACHE_ENV, str(tmp_path / "cache" / "hashes.json"))
    monkeypatch.setattr(hashing, "_DIGESTS", {})
    calls: list[str] = []

    def hashed(path, chunk_bytes: int = 1 << 20) -> str:
        calls.append(str(path))
        return file_sha256(path, chunk_bytes)

    monkeypatch.setattr(hashing, "file_sha256", hashed)
    return calls


def _weights(path: Path, fill: bytes = b"w") -> Path:
    path.write_bytes(fill * PERSIST_MIN_BYTES)
    return path


def test_a_large_file_is_hashed_once_across_processes(counted: list[str], tmp_path: Path, monkeypatch) -> None:
    weights = _weights(tmp_path / "model.pt")
    first = cached_file_sha256(weights, persist=True)
    assert first == file_sha256(weights) and cached_file_sha256(weights, persist=True) == first and len(counted) == 1
    monkeypatch.setattr(hashing, "_DIGESTS", {})  # a new process: only the file on disk remembers
    assert cached_file_sha256(weights, persist=True) == first and len(counted) == 1
    entry = json.loads((tmp_path / "cache" / "hashes.json").read_text())[os.path.realpath(weights)]
    assert entry[-1] == first


def test_an_edited_file_is_hashed_again_even_with_its_old_mtime(counted: list[str], tmp_path: Path,
                                                                 monkeypatch) -> None:
    weights = _weights(tmp_path / "model.pt")
    before = os.stat(weights)
    first = cached_file_sha256(weights, persist=True)
    _weights(weights, b"x")  # same size, new content
    os.utime(weights, ns=(before.st_atime_ns, before.st_mtime_ns))  # and the old mtime: ctime still moves
    monkeypatch.setattr(hashing, "_DIGESTS", {})
    assert cached_file_sha256(weights, persist=True) == file_sha256(weights) != first
    assert len(counted) == 2


def test_a_touched_or_replaced_file_is_hashed_again(counted: list[str], tmp_path: Path) -> None:
    weights = _weights(tmp_path / "model.pt")
    first = cached_file_sha256(weights, persist=True)
    stat = os.stat(weights)
    os.utime(weights, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))  # mtime changed, content not
    assert cached_file_sha256(weights, persist=True) == first and len(counted) == 2
    other = _weights(tmp_path / "other.pt", b"z")
    os.replace(other, weights)  # another file under the same path
    assert cached_file_sha256(weights, persist=True) == file_sha256(weights) != first and len(counted) == 3


def test_images_and_small_files_stay_in_the_process(counted: list[str], tmp_path: Path) -> None:
    """Only what is asked to persist (weights, annotations), and only from 1 MiB, goes to the file."""
    small, image = tmp_path / "small.pt", _weights(tmp_path / "image.png")
    small.write_bytes(b"w" * 100)
    for _ in range(2):
        cached_file_sha256(small, persist=True)
        cached_file_sha256(image)
    assert len(counted) == 2 and not (tmp_path / "cache" / "hashes.json").exists()


@pytest.mark.parametrize("damage", ["garbage", "list", "read-only folder"])
def test_a_damaged_or_unwritable_cache_only_costs_a_hash(damage: str, counted: list[str], tmp_path: Path,
                                                         monkeypatch) -> None:
    cache = tmp_path / "cache" / "hashes.json"
    cache.parent.mkdir()
    weights = _weights(tmp_path / "model.pt")
    if damage == "garbage":
        cache.write_bytes(b"\x00{not json")
    elif damage == "list":
        cache.write_text("[1, 2]")
    else:
        cache.parent.chmod(0o500)
    try:
        assert cached_file_sha256(weights, persist=True) == file_sha256(weights)
        monkeypatch.setattr(hashing, "_DIGESTS", {})
        assert cached_file_sha256(weights, persist=True) == file_sha256(weights)
    finally:
        cache.parent.chmod(0o700)
    assert len(counted) == (1 if damage != "read-only folder" or os.geteuid() == 0 else 2)


def test_off_keeps_nothing_on_disk(counted: list[str], tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv(hashing.HASH_CACHE_ENV, "off")
    assert hashing.hash_cache_file() is None
    cached_file_sha256(_weights(tmp_path / "model.pt"), persist=True)
    assert not (tmp_path / "cache").exists()
    monkeypatch.delenv(hashing.HASH_CACHE_ENV)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert hashing.hash_cache_file() == tmp_path / "xdg" / "vcm-plugin" / "file-sha256-v1.json"


def test_task_model_weights_use_it(counted: list[str], shared: Path, tmp_path: Path) -> None:
    """A task model's weights hash (part of every unit key) goes through the cache, kept across runs."""
    from vcm_plugin.tasks.registry import get_task_model

    weights_dir = str(shared / "weights")
    a = get_task_model("yolov5", weights="yolov5n.pt", search_path=[weights_dir]).identity()
    b = get_task_model("yolov5", weights="yolov5n.pt", search_path=[weights_dir]).identity()
    assert a == b and len(counted) == 1
    kept = json.loads((tmp_path / "cache" / "hashes.json").read_text())
    assert os.path.realpath(shared / "weights" / "yolov5n.pt") in kept
