"""Download the MPEG VCM Open Images V6 validation images (needs internet).

The images come from the public Open Images bucket (the one the official
``openimages/dataset`` ``downloader.py`` reads, bucket ``open-images-dataset``, key
``validation/<ImageID>.jpg``) over plain HTTPS:
``https://open-images-dataset.s3.amazonaws.com/validation/<ImageID>.jpg``.

Resumable: an ``<ImageID>.jpg`` already in the output folder is kept when Pillow decodes
it completely and, for ids in ``extra/Openimage_numpixel_test5000.json``, its size is the
recorded ``[height, width]``; anything else is fetched again. Each download goes to
``<ImageID>.jpg.part``, is verified the same way, then renamed atomically, so a final
name never holds a partial file. Failures are collected in the :class:`DownloadReport`.
A first download with a short timeout probes the host: when it cannot be reached the
function raises at once instead of trying 5,000 URLs.
"""

from __future__ import annotations

import http.client
import json
import os
import re
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

from vcm_plugin.errors import VcmError

HOST = "open-images-dataset.s3.amazonaws.com"
BASE_URL = f"https://{HOST}"
SPLIT = "validation"
SUBSET_LISTS = {"detection": "detection_validation_input_5k.lst",
                "segmentation": "segmentation_validation_input_5k.lst"}
NUMPIXEL_JSON = "extra/Openimage_numpixel_test5000.json"
PROBE_TIMEOUT_S = 5.0
TIMEOUT_S = 30.0
CHUNK_BYTES = 1 << 16
_ID_RE = re.compile(r"[0-9a-f]+")
_MAX_LISTED = 5

#: ``opener(url, timeout=seconds)`` -> a binary response with ``read(n)`` (a context manager), as ``urlopen``.
Opener = Callable[..., BinaryIO]


class DownloadError(VcmError, RuntimeError):
    """The download cannot start or go on (no internet, unwritable output, bad list)."""


class _FetchError(Exception):
    """One image could not be fetched; ``network`` when the host was not reached at all."""

    def __init__(self, reason: str, network: bool, retry: bool) -> None:
        super().__init__(reason)
        self.reason, self.network, self.retry = reason, network, retry


@dataclass
class DownloadReport:
    """What :func:`download_openimages` did, per image id (all lists in the image list's order)."""

    subset: str
    output: Path
    image_ids: list[str]
    downloaded: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)  # already present and verified
    replaced: list[tuple[str, str]] = field(default_factory=list)  # (id, why the present file was refetched)
    failed: list[tuple[str, str]] = field(default_factory=list)  # (id, reason)
    stale_parts_removed: int = 0

    @property
    def ok(self) -> bool:
        """True when every listed image is now present and verified."""
        return not self.failed

    def summary(self) -> str:
        """One line: counts of downloaded, skipped, refetched and failed images."""
        text = (f"Open Images {self.subset}: {len(self.image_ids)} listed, {len(self.downloaded)} downloaded, "
                f"{len(self.skipped)} already present, {len(self.replaced)} invalid files refetched, "
                f"{len(self.failed)} failed -> {self.output}")
        if self.failed:
            text += "; first failures: " + "; ".join(f"{i}: {r}" for i, r in self.failed[:_MAX_LISTED])
        return text


def image_url(image_id: str, split: str = SPLIT) -> str:
    """The public HTTPS URL of an Open Images image (``split``: train, validation, test)."""
    if not _ID_RE.fullmatch(image_id):
        raise DownloadError(f"{image_id!r} is not an Open Images image id (lowercase hex)")
    return f"{BASE_URL}/{split}/{image_id}.jpg"


def default_lists_root() -> Path:
    """``$VCM_SHARED/data/openimages/mpeg-vcm``, else ``../shared/...`` beside the project (or the cwd)."""
    tail = Path("data", "openimages", "mpeg-vcm")
    if os.environ.get("VCM_SHARED"):
        return Path(os.environ["VCM_SHARED"]) / tail
    candidates = [Path(__file__).resolve().parents[2].parent / "shared" / tail, Path.cwd().parent / "shared" / tail]
    return next((c for c in candidates if c.is_dir()), candidates[0])


def read_numpixels(path: Path) -> dict[str, tuple[int, int]]:
    """``{ImageID: (height, width)}`` from ``Openimage_numpixel_test5000.json``; empty when the file is absent."""
    if not path.is_file():
        return {}
    try:
        data = json.loads(path.read_text())
        return {str(k): (int(v[0]), int(v[1])) for k, v in data.items()}
    except (OSError, ValueError, TypeError, IndexError, AttributeError) as exc:
        raise DownloadError(f"{path}: not a {{ImageID: [height, width, pixels]}} JSON: {exc}") from exc


def verify_image(path: Path, expected_hw: tuple[int, int] | None = None) -> str | None:
    """None when Pillow fully decodes ``path`` (and its size is ``expected_hw`` = (h, w)); else why not."""
    from PIL import Image

    try:
        with Image.open(path) as image:
            image.load()
            width, height = image.size
    except Exception as exc:  # Pillow raises many types on damaged data
        return f"does not decode: {type(exc).__name__}: {exc}"
    if expected_hw is not None and (height, width) != tuple(expected_hw):
        return f"is {width}x{height}, expected {expected_hw[1]}x{expected_hw[0]} (numpixel json)"
    return None


def _fetch(opener: Opener, url: str, part: Path, timeout: float) -> None:
    """Write ``url``'s body to ``part``; :class:`_FetchError` on any failure (``part`` then removed)."""
    try:
        with opener(url, timeout=timeout) as response, open(part, "wb") as fh:
            while chunk := response.read(CHUNK_BYTES):
                fh.write(chunk)
    except urllib.error.HTTPError as exc:  # the host answered
        part.unlink(missing_ok=True)
        raise _FetchError(f"HTTP {exc.code} {exc.reason}", network=False,
                          retry=exc.code >= 500 or exc.code == 429) from None
    except (urllib.error.URLError, OSError, http.client.HTTPException, ValueError) as exc:  # DNS, timeout, cut
        part.unlink(missing_ok=True)
        reason = getattr(exc, "reason", None) or exc
        raise _FetchError(f"{type(exc).__name__}: {reason}", network=True, retry=True) from None
    except BaseException:
        part.unlink(missing_ok=True)
        raise


def _download_one(opener: Opener, image_id: str, output: Path, expected_hw: tuple[int, int] | None,
                  timeout: float, retries: int, backoff_s: float) -> None:
    """Fetch one image to ``<id>.jpg`` through ``<id>.jpg.part``; :class:`_FetchError` on failure."""
    final = output / f"{image_id}.jpg"
    part = output / f"{image_id}.jpg.part"
    url = image_url(image_id)
    for attempt in range(retries + 1):
        try:
            _fetch(opener, url, part, timeout)
        except _FetchError as exc:
            if not exc.retry or attempt == retries:
                raise
            time.sleep(backoff_s * (attempt + 1))
            continue
        problem = verify_image(part, expected_hw)
        if problem is None:
            os.replace(part, final)
            return
        part.unlink(missing_ok=True)
        if attempt == retries:
            raise _FetchError(f"downloaded file {problem}", network=False, retry=False)


def download_openimages(subset: str, output: str | Path, lists_root: str | Path | None = None, jobs: int = 4,
                        opener: Opener | None = None, progress: bool = True, retries: int = 2,
                        timeout_s: float = TIMEOUT_S, backoff_s: float = 1.0) -> DownloadReport:
    """Download the Open Images validation images of a MPEG VCM ``subset`` list into ``output``.

    ``subset``: ``"detection"`` or ``"segmentation"`` (``<lists_root>/<subset>_validation_input_5k.lst``;
    the segmentation list names ``.png`` files, the originals fetched are ``.jpg``).
    ``lists_root``: the ``mpeg-vcm`` folder (default :func:`default_lists_root`). ``jobs``: download
    threads. ``opener``: ``urllib.request.urlopen`` by default (tests pass a fake). ``retries``:
    extra attempts on network errors, HTTP 5xx/429 and corrupt downloads; ``timeout_s``: per request (s).
    Raises :class:`DownloadError` when the first download cannot reach the host.
    """
    from tqdm import tqdm

    from vcm_plugin.datasets.openimages import read_image_list

    if subset not in SUBSET_LISTS:
        raise DownloadError(f"subset must be one of {sorted(SUBSET_LISTS)}, got {subset!r}")
    if isinstance(jobs, bool) or not isinstance(jobs, int) or jobs < 1:
        raise DownloadError(f"jobs must be a positive integer, got {jobs!r}")
    lists_root = Path(lists_root) if lists_root is not None else default_lists_root()
    list_path = lists_root / SUBSET_LISTS[subset]
    if not list_path.is_file():
        raise DownloadError(f"image list {list_path} does not exist (pass the mpeg-vcm folder as lists_root / --lists)")
    image_ids = [image_id for image_id, _ in read_image_list(list_path)]
    bad = [i for i in image_ids if not _ID_RE.fullmatch(i)]
    if bad:
        raise DownloadError(f"{list_path}: {len(bad)} name(s) are not Open Images ids (lowercase hex): {bad[:5]}")
    sizes = read_numpixels(lists_root / NUMPIXEL_JSON)
    output = Path(output)
    try:
        output.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise DownloadError(f"cannot create output folder {output}: {exc.strerror or exc}") from exc
    if opener is None:
        opener = urllib.request.urlopen
    report = DownloadReport(subset, output, image_ids)
    for image_id in image_ids:  # leftovers of an interrupted run
        part = output / f"{image_id}.jpg.part"
        if part.exists():
            part.unlink()
            report.stale_parts_removed += 1

    bar = tqdm(total=len(image_ids), desc=f"Open Images {subset}", unit="img", disable=not progress)
    try:
        # 1. keep what is already there and valid (decoding is the slow part: threads)
        def check(image_id: str) -> str | None:
            final = output / f"{image_id}.jpg"
            return verify_image(final, sizes.get(image_id)) if final.exists() else ""

        pending: list[str] = []
        with ThreadPoolExecutor(max_workers=jobs) as pool:
            for image_id, problem in zip(image_ids, pool.map(check, image_ids)):
                if problem is None:
                    report.skipped.append(image_id)
                    bar.update(1)
                else:
                    if problem:
                        report.replaced.append((image_id, f"present file {problem}"))
                    pending.append(image_id)
        if not pending:
            return report

        # 2. the probe: one download with a short timeout and no retry
        first = pending[0]
        try:
            _download_one(opener, first, output, sizes.get(first), PROBE_TIMEOUT_S, 0, backoff_s)
            report.downloaded.append(first)
        except _FetchError as exc:
            if exc.network:
                raise DownloadError(f"cannot reach {HOST}: no internet? (probe {image_url(first)} failed within "
                                    f"{PROBE_TIMEOUT_S:g} s: {exc.reason}). Nothing else was tried; run again "
                                    f"when online, or extract validation.tar.gz from Open Images into {output}"
                                    ) from None
            report.failed.append((first, exc.reason))
        bar.update(1)

        # 3. the rest
        outcome: dict[str, str | None] = {}  # image id -> why it failed, None: downloaded
        with ThreadPoolExecutor(max_workers=jobs) as pool:
            futures = {pool.submit(_download_one, opener, i, output, sizes.get(i), timeout_s, retries, backoff_s): i
                       for i in pending[1:]}
            try:
                for future in as_completed(futures):
                    try:
                        outcome[futures[future]] = future.result()
                    except _FetchError as exc:
                        outcome[futures[future]] = exc.reason
                    except OSError as exc:  # local disk trouble (rename, full disk)
                        outcome[futures[future]] = f"local file error: {exc}"
                    bar.update(1)
            except BaseException:
                pool.shutdown(wait=True, cancel_futures=True)
                raise
        report.downloaded += [i for i in pending[1:] if i in outcome and outcome[i] is None]
        report.failed += [(i, reason) for i in pending[1:] if (reason := outcome.get(i)) is not None]
        return report
    finally:
        bar.close()

