"""download_openimages with a fake opener (never the network): URLs, resume, verification, failures, offline probe."""

from __future__ import annotations

import argparse
import http.client
import io
import json
import shutil
import socket
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from PIL import Image

from vcm_plugin.cli import download as download_cli
from vcm_plugin.datasets.download import (
    HOST,
    PROBE_TIMEOUT_S,
    DownloadError,
    default_lists_root,
    download_openimages,
    image_url,
)

IDS = ("aaaa000000000001", "aaaa000000000002", "aaaa000000000003", "aaaa000000000004")
SIZES = {IDS[0]: (6, 8), IDS[1]: (10, 12), IDS[2]: (4, 4), IDS[3]: (9, 7)}  # (h, w), as the numpixel json


@pytest.fixture(autouse=True)
def no_network(monkeypatch: pytest.MonkeyPatch) -> None:
    """Any real connection attempt fails the test."""
    def refuse(*args, **kwargs):
        raise AssertionError("a test tried to use the network")

    monkeypatch.setattr(urllib.request, "urlopen", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)


def jpeg(hw: tuple[int, int]) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (hw[1], hw[0]), (200, 30, 90)).save(buffer, "JPEG")
    return buffer.getvalue()


class FakeOpener:
    """``opener(url, timeout=...)``: bodies, exceptions or response factories per URL (a list: one per call,
    the last repeats); the calls are logged; an unknown URL answers HTTP 404."""

    def __init__(self, answers: dict[str, object]) -> None:
        self.answers = {url: list(a) if isinstance(a, list) else [a] for url, a in answers.items()}
        self.calls: list[tuple[str, float]] = []

    def __call__(self, url: str, timeout: float):
        self.calls.append((url, timeout))
        queue = self.answers.get(url)
        if not queue:
            raise urllib.error.HTTPError(url, 404, "Not Found", {}, None)
        answer = queue.pop(0) if len(queue) > 1 else queue[0]
        if isinstance(answer, BaseException):
            raise answer
        if callable(answer):  # a fresh response per call
            return answer()
        return io.BytesIO(answer)


class Broken(io.BytesIO):
    """A response that delivers some bytes, then the connection drops."""

    def read(self, n: int = -1) -> bytes:
        if self.tell() == 0:
            return super().read(10)
        raise http.client.IncompleteRead(b"", 100)


@pytest.fixture()
def lists(tmp_path: Path) -> Path:
    root = tmp_path / "mpeg-vcm"
    (root / "extra").mkdir(parents=True)
    (root / "detection_validation_input_5k.lst").write_text("\n".join(f"{i}.jpg" for i in IDS))
    (root / "segmentation_validation_input_5k.lst").write_text("\n".join(f"{i}.png" for i in IDS[:2]))
    (root / "extra" / "Openimage_numpixel_test5000.json").write_text(
        json.dumps({i: [h, w, h * w] for i, (h, w) in SIZES.items()}))
    return root


def good_opener() -> FakeOpener:
    return FakeOpener({image_url(i): jpeg(SIZES[i]) for i in IDS})


def run(lists: Path, out: Path, opener: FakeOpener, subset: str = "detection", **kw):
    return download_openimages(subset, out, lists, jobs=2, opener=opener, progress=False, backoff_s=0.0, **kw)


def test_url_scheme() -> None:
    assert image_url("0001eeaf4aed83f9") == \
        "https://open-images-dataset.s3.amazonaws.com/validation/0001eeaf4aed83f9.jpg"
    assert image_url("0001eeaf4aed83f9", "train").endswith("/train/0001eeaf4aed83f9.jpg")
    with pytest.raises(DownloadError, match="not an Open Images image id"):
        image_url("../etc/passwd")


def test_fresh_download(lists: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    opener = good_opener()
    report = run(lists, out, opener)
    assert report.ok and report.downloaded == list(IDS) and not report.skipped and not report.failed
    assert sorted(p.name for p in out.iterdir()) == [f"{i}.jpg" for i in IDS]  # no .part left
    for image_id in IDS:
        with Image.open(out / f"{image_id}.jpg") as image:
            assert image.size == (SIZES[image_id][1], SIZES[image_id][0])
    assert sorted(url for url, _ in opener.calls) == sorted(image_url(i) for i in IDS)
    assert opener.calls[0] == (image_url(IDS[0]), PROBE_TIMEOUT_S)  # the probe: first pending, short timeout
    assert "4 downloaded" in report.summary()


def test_resume_skips_valid_refetches_corrupt_and_wrong_size(lists: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    (out / f"{IDS[0]}.jpg").write_bytes(jpeg(SIZES[IDS[0]]))  # valid: kept
    (out / f"{IDS[1]}.jpg").write_bytes(jpeg(SIZES[IDS[1]])[:-200])  # truncated: refetched
    (out / f"{IDS[2]}.jpg").write_bytes(jpeg((5, 5)))  # decodes, wrong size: refetched
    (out / f"{IDS[3]}.jpg.part").write_bytes(b"left by a killed run")
    (out / f"{IDS[0]}.jpg.part").write_bytes(b"left by a killed run")  # beside a valid file: removed too
    before = (out / f"{IDS[0]}.jpg").stat().st_mtime_ns
    opener = good_opener()
    report = run(lists, out, opener)
    assert report.ok and report.skipped == [IDS[0]] and report.downloaded == list(IDS[1:])
    assert [i for i, _ in report.replaced] == [IDS[1], IDS[2]]
    assert "does not decode" in report.replaced[0][1] and "is 5x5, expected 4x4" in report.replaced[1][1]
    assert report.stale_parts_removed == 2
    assert image_url(IDS[0]) not in [url for url, _ in opener.calls]
    assert (out / f"{IDS[0]}.jpg").stat().st_mtime_ns == before
    assert sorted(p.name for p in out.iterdir()) == [f"{i}.jpg" for i in IDS]
    again = run(lists, out, FakeOpener({}))  # everything present: no request at all
    assert again.skipped == list(IDS) and not again.downloaded


def test_failures_are_reported_and_leave_no_file(lists: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    answers = {image_url(IDS[0]): jpeg(SIZES[IDS[0]]),
               image_url(IDS[1]): b"<html>AccessDenied</html>",  # not an image (every attempt)
               image_url(IDS[2]): lambda: Broken(jpeg(SIZES[IDS[2]]))}  # connection drops mid-body
    # IDS[3]: HTTP 404
    opener = FakeOpener(answers)
    report = run(lists, out, opener, retries=1)
    assert report.downloaded == [IDS[0]] and not report.ok
    reasons = dict(report.failed)
    assert list(reasons) == list(IDS[1:])
    assert "does not decode" in reasons[IDS[1]]
    assert "IncompleteRead" in reasons[IDS[2]]
    assert reasons[IDS[3]] == "HTTP 404 Not Found"
    assert sorted(p.name for p in out.iterdir()) == [f"{IDS[0]}.jpg"]  # no partial file, no .part
    calls = [url for url, _ in opener.calls]
    assert calls.count(image_url(IDS[1])) == 2 and calls.count(image_url(IDS[2])) == 2  # retried once
    assert calls.count(image_url(IDS[3])) == 1  # a 404 is not retried
    assert "3 failed" in report.summary() and IDS[3] in report.summary()


def test_transient_error_then_success(lists: Path, tmp_path: Path) -> None:
    opener = good_opener()
    opener.answers[image_url(IDS[2])] = [ConnectionResetError("reset by peer"), jpeg(SIZES[IDS[2]])]
    opener.answers[image_url(IDS[3])] = [urllib.error.HTTPError("u", 503, "Slow Down", {}, None),
                                         jpeg(SIZES[IDS[3]])]
    report = run(lists, tmp_path / "out", opener, retries=2)
    assert report.ok and report.downloaded == list(IDS)


def test_offline_probe_fails_fast(lists: Path, tmp_path: Path) -> None:
    opener = FakeOpener({image_url(i): urllib.error.URLError(socket.gaierror(-3, "Temporary failure in name "
                                                                                  "resolution")) for i in IDS})
    with pytest.raises(DownloadError, match=f"cannot reach {HOST}: no internet") as info:
        run(lists, tmp_path / "out", opener)
    assert len(opener.calls) == 1 and opener.calls[0][1] == PROBE_TIMEOUT_S
    assert "name resolution" in str(info.value)
    opener = FakeOpener({image_url(i): TimeoutError("timed out") for i in IDS})
    with pytest.raises(DownloadError, match="no internet"):
        run(lists, tmp_path / "out", opener)
    assert len(opener.calls) == 1
    assert not list((tmp_path / "out").iterdir())


def test_probe_answered_with_http_error_goes_on(lists: Path, tmp_path: Path) -> None:
    opener = good_opener()
    opener.answers[image_url(IDS[0])] = [urllib.error.HTTPError("u", 403, "Forbidden", {}, None)]
    report = run(lists, tmp_path / "out", opener)
    assert report.failed == [(IDS[0], "HTTP 403 Forbidden")] and report.downloaded == list(IDS[1:])


def test_real_lists_offline(shared: Path, tmp_path: Path) -> None:
    """The real detection list: the 3 real images are verified against the numpixel json, then one probe only."""
    root = shared / "data" / "openimages" / "mpeg-vcm"
    out = tmp_path / "out"
    out.mkdir()
    for path in (shared / "data" / "openimages" / "images").glob("*.jpg"):
        shutil.copy(path, out / path.name)
    calls: list[tuple[str, float]] = []

    def unreachable(url: str, timeout: float):
        calls.append((url, timeout))
        raise urllib.error.URLError(OSError(101, "Network is unreachable"))

    with pytest.raises(DownloadError, match="Network is unreachable"):
        download_openimages("detection", out, root, jobs=2, opener=unreachable, progress=False)
    first = root.joinpath("detection_validation_input_5k.lst").read_text().splitlines()[0][:-4]
    assert calls == [(image_url(first), PROBE_TIMEOUT_S)]


def test_segmentation_list_downloads_jpgs(lists: Path, tmp_path: Path) -> None:
    report = run(lists, tmp_path / "out", good_opener(), subset="segmentation")
    assert report.downloaded == list(IDS[:2])
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [f"{i}.jpg" for i in IDS[:2]]


def test_bad_arguments(lists: Path, tmp_path: Path) -> None:
    with pytest.raises(DownloadError, match="subset must be one of"):
        run(lists, tmp_path, good_opener(), subset="classification")
    with pytest.raises(DownloadError, match="jobs must be a positive integer"):
        download_openimages("detection", tmp_path, lists, jobs=0, opener=good_opener(), progress=False)
    with pytest.raises(DownloadError, match="image list .*does not exist"):
        run(tmp_path / "nowhere", tmp_path, good_opener())
    (lists / "detection_validation_input_5k.lst").write_text("aaaa000000000001.jpg\nNOT-HEX.jpg")
    with pytest.raises(DownloadError, match="not Open Images ids"):
        run(lists, tmp_path, good_opener())
    blocker = tmp_path / "file"
    blocker.write_text("")
    (lists / "detection_validation_input_5k.lst").write_text("aaaa000000000001.jpg")
    with pytest.raises(DownloadError, match="cannot create output folder"):
        run(lists, blocker / "sub", good_opener())


def test_default_lists_root(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("VCM_SHARED", str(tmp_path))
    assert default_lists_root() == tmp_path / "data" / "openimages" / "mpeg-vcm"
    monkeypatch.delenv("VCM_SHARED")
    assert default_lists_root().parts[-4:] == ("shared", "data", "openimages", "mpeg-vcm")


def test_cli_parser_and_handler(lists: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                capsys: pytest.CaptureFixture) -> None:
    parser = argparse.ArgumentParser(prog="vcm")
    download_cli.add_parser(parser.add_subparsers(dest="command", required=True))
    out = tmp_path / "out"
    args = parser.parse_args(["download", "openimages", "--subset", "detection", "--output", str(out),
                              "--lists", str(lists), "--jobs", "2", "--quiet"])
    assert args.func is download_cli.cmd
    assert (args.subset, args.output, args.lists, args.jobs) == ("detection", out, lists, 2)
    with pytest.raises(SystemExit):
        parser.parse_args(["download", "openimages", "--subset", "classification", "--output", str(out)])
    defaults = parser.parse_args(["download", "openimages", "--subset", "segmentation", "-o", str(out)])
    assert defaults.lists is None and defaults.jobs == 4

    opener = good_opener()
    monkeypatch.setattr(urllib.request, "urlopen", opener)  # the default opener, looked up at call time
    assert args.func(args) == 0
    assert "4 downloaded" in capsys.readouterr().out
    (out / f"{IDS[3]}.jpg").unlink()
    opener.answers[image_url(IDS[3])] = [urllib.error.HTTPError("u", 404, "Not Found", {}, None)]
    assert args.func(args) == 3
    assert "1 failed" in capsys.readouterr().out
