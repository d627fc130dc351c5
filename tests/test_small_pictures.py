"""The ffmpeg fork server: the same bits as one ffmpeg process per picture, and no hang when it breaks.

Every ffmpeg codec codes the embedded sample images and 32x32 / 227x227 crops through the
fork server (the default) and as one plain ffmpeg process per command
(``VCM_FFMPEG_SERVER=0``); streams and decoded pictures must be identical byte for byte.
Then the server's failure modes: killed between requests (restarted), its helper killed
during a request (an EncodeError naming the codec, at once), a hung command (the time
limit), a caller that dies mid-command, threads, fork / spawn pool workers and Dask
workers, interpreter exit; building the helper (keyed by source and compiler, a read-only
cache folder, no compiler) and the fall-back to plain processes.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator

import numpy as np
import pytest

import vcm_plugin.ffmpeg_server as server_module
from vcm_plugin import EncodeError, get_codec, read_image
from vcm_plugin.codecs.base import Codec
from vcm_plugin.codecs.ffmpeg import FFmpegCodec
from vcm_plugin.codecs.yuv import read_yuv_file, write_yuv_file
from vcm_plugin.features.vvc_frames import decode_frame, encode_frame
from vcm_plugin.ffmpeg import FFmpegError, find_ffmpeg, run_ffmpeg
from vcm_plugin.ffmpeg_server import SERVER_ENV, get_server
from vcm_plugin.images.resize import resize_rgb
from vcm_plugin.sample import coco_images_dir, kodak_images

EXE = find_ffmpeg()
SERVER = get_server(EXE) if EXE else None
pytestmark = pytest.mark.skipif(SERVER is None, reason="no ffmpeg, or the ffmpeg fork server cannot run here "
                                                       "(no C compiler, static ffmpeg, not Linux)")

# codec name -> (parameters, qualities): the defaults, as the harness and the anchors use them
DEFAULTS: dict[str, tuple[dict, tuple]] = {
    "vvc": ({}, (37, 22)),
    "hevc": ({}, (37, 22)),
    "av1": ({}, (40, 20)),
    "av1-svt": ({"encoder": "libsvtav1", "cpu_used": 10}, (40,)),
    "jxl": ({}, (2.0, 0.5)),
    "webp": ({}, (50, 90)),
}
# for the full sample images: the faster settings of each codec (the server runs any command alike)
FAST: dict[str, dict] = {"vvc": {"preset": "faster"}, "hevc": {"preset": "ultrafast"}, "av1": {"cpu_used": 8},
                         "av1-svt": {"encoder": "libsvtav1", "cpu_used": 12}, "jxl": {"effort": 3}, "webp": {}}


def make(label: str, **params) -> FFmpegCodec:
    codec = get_codec(label.split("-")[0], **params)
    if not codec.is_available():
        pytest.skip(f"{label}: {codec.is_available().reason}")
    return codec  # type: ignore[return-value]


@pytest.fixture(scope="module")
def samples() -> list[np.ndarray]:
    paths = [*kodak_images(), *sorted(coco_images_dir().glob("*.jpg"))]
    return [read_image(p) for p in paths]


@pytest.fixture(scope="module")
def crops(samples: list[np.ndarray]) -> list[np.ndarray]:
    kodim04, kodim23 = samples[0], samples[1]
    return [np.ascontiguousarray(kodim23[200:232, 300:332]), np.ascontiguousarray(kodim04[100:327, 50:277]),
            np.ascontiguousarray(samples[2][:227, :227]), np.ascontiguousarray(kodim23[:31, :33])]


def plain(monkeypatch: pytest.MonkeyPatch, run: Callable[[], object]) -> object:
    """``run()`` with every ffmpeg started as a plain process."""
    with monkeypatch.context() as m:
        m.setenv(SERVER_ENV, "0")
        return run()


def assert_same_coding(codec: Codec, image: np.ndarray, quality, monkeypatch: pytest.MonkeyPatch) -> None:
    served = codec.encode(image, quality)
    reference = plain(monkeypatch, lambda: codec.encode(image, quality))
    where = f"{codec.name} {codec.params()} at {quality} on {image.shape[1]}x{image.shape[0]}"
    assert served.data == reference.data, f"{where}: the stream differs from one ffmpeg process per picture"
    decoded = codec.decode(served)
    assert np.array_equal(decoded, plain(monkeypatch, lambda: codec.decode(reference))), f"{where}: decoded differs"


@pytest.mark.parametrize("label", list(DEFAULTS))
def test_crops_code_identically_to_one_process_per_picture(label: str, crops: list[np.ndarray],
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    params, qualities = DEFAULTS[label]
    codec = make(label, **params)
    for image in crops:
        for quality in qualities:
            assert_same_coding(codec, image, quality, monkeypatch)


@pytest.mark.slow
@pytest.mark.parametrize("label", list(FAST))
def test_sample_images_code_identically_to_one_process_per_picture(label: str, samples: list[np.ndarray],
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    codec = make(label, **FAST[label])
    for image in samples:
        assert_same_coding(codec, image, DEFAULTS[label][1][0], monkeypatch)


def test_kodim23_vvc_medium_identical(samples: list[np.ndarray], monkeypatch: pytest.MonkeyPatch) -> None:
    assert_same_coding(make("vvc"), samples[1], 32, monkeypatch)


def test_frames_conversions_and_resizing_identical(crops: list[np.ndarray], tmp_path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    from vcm_plugin.codecs.ffmpeg import ColourConversion

    frame = np.random.default_rng(0).integers(0, 1024, (40, 72)).astype(np.uint16)
    served = encode_frame(frame, 32, preset="faster")
    assert served == plain(monkeypatch, lambda: encode_frame(frame, 32, preset="faster"))
    assert np.array_equal(decode_frame(served, 40, 72), plain(monkeypatch, lambda: decode_frame(served, 40, 72)))
    image, colour = crops[1][:226, :226], ColourConversion()
    write_yuv_file(image, tmp_path / "a.yuv", colour, EXE, 60)
    plain(monkeypatch, lambda: write_yuv_file(image, tmp_path / "b.yuv", colour, EXE, 60))
    assert (tmp_path / "a.yuv").read_bytes() == (tmp_path / "b.yuv").read_bytes()
    assert np.array_equal(read_yuv_file(tmp_path / "a.yuv", 226, 226, colour, EXE, 60),
                          plain(monkeypatch, lambda: read_yuv_file(tmp_path / "a.yuv", 226, 226, colour, EXE, 60)))
    assert np.array_equal(resize_rgb(image, 60, 100), plain(monkeypatch, lambda: resize_rgb(image, 60, 100)))


# -- failure modes -------------------------------------------------------------------------
def children(pid: int) -> list[int]:
    """Process ids whose parent is ``pid``."""
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    stat = f.read()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                found.append(int(entry))
    return found


def gone(pid: int) -> bool:
    """Whether process ``pid`` has ended (absent, or a zombie waiting to be reaped)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] == "Z"
    except OSError:
        return True


def wait_for(condition: Callable[[], object], timeout: float = 20.0):
    deadline = time.monotonic() + timeout
    while not (value := condition()):
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.01)
    return value


def endless_command() -> list[str]:
    """An ffmpeg command that never ends by itself (an endless test source)."""
    return [EXE, "-hide_banner", "-nostdin", "-v", "error", "-f", "lavfi", "-i", "testsrc=size=64x64:rate=25",
            "-f", "rawvideo", "-pix_fmt", "rgb24", "pipe:1"]


@pytest.fixture
def server_pid() -> Iterator[int]:
    server = get_server(EXE)
    assert server is not None and server.alive()
    yield server._proc.pid  # type: ignore[union-attr]


def test_a_killed_server_is_restarted(server_pid: int, crops: list[np.ndarray]) -> None:
    os.kill(server_pid, signal.SIGKILL)
    wait_for(lambda: gone(server_pid))
    codec = make("webp")
    assert codec.decode(codec.encode(crops[0], 50)).shape == crops[0].shape
    server = get_server(EXE)
    assert server is not None and server.alive() and server._proc.pid != server_pid  # type: ignore[union-attr]


def test_a_hung_command_times_out(server_pid: int) -> None:
    start = time.monotonic()
    with pytest.raises(FFmpegError, match="timed out after 1 s"):
        run_ffmpeg(endless_command(), b"", timeout=1.0)
    assert time.monotonic() - start < 5
    time.sleep(0.2)
    assert children(server_pid) == [], "the timed-out ffmpeg (or its waiter) is still running"


@pytest.mark.parametrize("victim", ["helper", "ffmpeg", "server"])
def test_a_crash_during_a_request_is_an_error_naming_the_codec(victim: str, server_pid: int,
                                                               samples: list[np.ndarray]) -> None:
    codec = make("vvc", timeout=120.0)  # ~3 s on kodim23 at QP 22: time to kill it mid-way
    outcome: list[object] = []

    def encode() -> None:
        try:
            outcome.append(codec.encode(samples[1], 22))
        except Exception as exc:  # noqa: BLE001 (the outcome is checked below)
            outcome.append(exc)

    thread = threading.Thread(target=encode)
    thread.start()
    helper = wait_for(lambda: children(server_pid))[0]
    ffmpeg = wait_for(lambda: children(helper))[0]
    os.kill({"helper": helper, "ffmpeg": ffmpeg, "server": server_pid}[victim], signal.SIGKILL)
    killed = time.monotonic()
    thread.join(timeout=60)
    assert not thread.is_alive(), "the codec hangs after its helper process died"
    if victim != "server":
        assert time.monotonic() - killed < 1.0, "the failure was not seen at once"
    if victim == "server":  # the request's own helper finishes it; the next request starts a new server
        assert not isinstance(outcome[0], Exception), outcome[0]
        assert make("webp").encode(samples[1][:32, :32], 50).data
    else:
        assert isinstance(outcome[0], EncodeError) and "'vvc'" in str(outcome[0]), outcome[0]
        wait_for(lambda: gone(ffmpeg), timeout=5)  # not left running


def test_threads_share_the_server(crops: list[np.ndarray], monkeypatch: pytest.MonkeyPatch) -> None:
    codec = make("hevc", preset="ultrafast")
    reference = [plain(monkeypatch, lambda im=im: codec.encode(im, 30).data) for im in crops]
    results: dict[int, list[bytes]] = {}

    def work(k: int) -> None:
        results[k] = [codec.encode(im, 30).data for im in crops for _ in range(2)][::2]

    threads = [threading.Thread(target=work, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert all(results[k] == reference for k in range(4))


def _child_encode(image: np.ndarray, queue) -> None:
    server = get_server(EXE)
    queue.put((get_codec("webp").encode(image, 50).data, server._proc.pid if server else None))  # type: ignore


def test_a_forked_worker_gets_its_own_server(crops: list[np.ndarray], server_pid: int) -> None:
    ctx = multiprocessing.get_context("fork")
    queue = ctx.Queue()
    proc = ctx.Process(target=_child_encode, args=(crops[1], queue))
    proc.start()
    data, child_server = queue.get(timeout=60)
    proc.join(timeout=30)
    assert proc.exitcode == 0
    assert child_server not in (None, server_pid)
    assert data == get_codec("webp").encode(crops[1], 50).data
    assert get_server(EXE)._proc.pid == server_pid  # type: ignore[union-attr]  (the parent's is untouched)
    wait_for(lambda: gone(child_server), timeout=10)


def test_servers_end_with_their_interpreter() -> None:
    code = ("import numpy as np, vcm_plugin as v; from vcm_plugin.ffmpeg_server import get_server; "
            "from vcm_plugin.ffmpeg import find_ffmpeg; v.get_codec('webp').encode(np.zeros((8, 8, 3), np.uint8), 50);"
            "print(get_server(find_ffmpeg())._proc.pid)")
    for ending in ("", "; import os; os._exit(0)"):  # atexit, or the socket closed by the kernel
        pid = int(subprocess.run([sys.executable, "-c", code + ending], capture_output=True, check=True,
                                 timeout=120).stdout.split()[-1])
        wait_for(lambda pid=pid: gone(pid), timeout=10)


def test_switched_off_and_scripts_run_as_plain_processes(monkeypatch: pytest.MonkeyPatch, tmp_path) -> None:
    script = tmp_path / "ffmpeg"
    script.write_text(f'#!/bin/sh\nexec "{EXE}" "$@"\n')
    script.chmod(0o755)
    assert get_server(str(script)) is None
    monkeypatch.setenv(SERVER_ENV, "0")
    assert get_server(EXE) is None
    with pytest.raises(FFmpegError, match="fork server cannot run"):
        run_ffmpeg([EXE, "-version", "pipe:1"], b"", timeout=30, server=True)


def test_every_ffmpeg_codec_is_checked() -> None:
    """A new ffmpeg codec must be added to DEFAULTS (so that its bits are compared above)."""
    from vcm_plugin.codecs import codec_names, get_codec_class

    ffmpeg_codecs = {name for name in codec_names() if issubclass(get_codec_class(name), FFmpegCodec)}
    assert ffmpeg_codecs <= {label.split("-")[0] for label in DEFAULTS}, ffmpeg_codecs


def test_a_caller_that_dies_mid_command_leaves_no_ffmpeg_running() -> None:
    code = ("import sys; from vcm_plugin.ffmpeg import run_ffmpeg; from vcm_plugin.ffmpeg_server import get_server; "
            f"print(get_server({EXE!r})._proc.pid, flush=True); run_ffmpeg({endless_command()!r}, b'', 600)")
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE)
    try:
        server = int(proc.stdout.readline())  # type: ignore[union-attr]
        helper = wait_for(lambda: children(server))[0]
        ffmpeg = wait_for(lambda: children(helper))[0]
    finally:
        proc.kill()
        proc.wait()
    for pid in (ffmpeg, helper, server):
        wait_for(lambda pid=pid: gone(pid), timeout=10)


def _worker_server(_: object = None) -> tuple[int, int | None]:
    server = get_server(EXE)  # type: ignore[arg-type]
    get_codec("webp").encode(np.zeros((32, 32, 3), np.uint8), 50)
    return os.getpid(), server._proc.pid if server else None  # type: ignore[union-attr]


@pytest.mark.parametrize("method", ["fork", "spawn"])
def test_pool_workers_each_get_their_own_server(method: str, server_pid: int) -> None:
    from concurrent.futures import ProcessPoolExecutor

    with ProcessPoolExecutor(2, mp_context=multiprocessing.get_context(method)) as pool:
        found = dict(pool.map(_worker_server, range(8), chunksize=1))
    servers = list(found.values())
    assert None not in servers and server_pid not in servers and len(set(servers)) == len(found), found
    assert get_server(EXE)._proc.pid == server_pid  # type: ignore[union-attr]  (the parent's is untouched)
    for pid in servers:
        wait_for(lambda pid=pid: gone(pid), timeout=10)  # ended with their worker


@pytest.mark.slow
def test_dask_workers_each_get_their_own_server(server_pid: int) -> None:
    distributed = pytest.importorskip("dask.distributed")
    cluster = distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None)
    with cluster, distributed.Client(cluster) as client:
        found = dict(client.run(_worker_server).values())
    servers = list(found.values())
    assert None not in servers and server_pid not in servers and len(set(servers)) == 2, found


# -- building the helper, and running without it -------------------------------------------
@pytest.fixture
def fresh_library(monkeypatch: pytest.MonkeyPatch, tmp_path) -> Iterator[Callable[[], object]]:
    """:func:`preload_library` looked up afresh, with the cache and temp folders under ``tmp_path``."""
    monkeypatch.setattr(server_module, "cache_dir", lambda: tmp_path / "cache" / "vcm-plugin")
    monkeypatch.setattr(server_module, "_temp_dir", lambda: tmp_path / "tmp" / "vcm-plugin-0")
    server_module.preload_library.cache_clear()
    yield server_module.preload_library
    server_module.preload_library.cache_clear()


def test_the_library_is_keyed_by_source_and_compiler() -> None:
    names = {server_module.library_name(source, compiler)
             for source in (b"int x;", b"int y;") for compiler in ("/usr/bin/gcc\ngcc 12", "/usr/bin/gcc\ngcc 13")}
    assert len(names) == 4
    compiler = server_module.find_compiler()
    assert compiler is not None
    library = server_module.preload_library()
    assert library is not None
    assert library.name == server_module.library_name(server_module.SOURCE.read_bytes(), compiler[1])


def test_a_read_only_cache_folder_builds_in_the_temp_folder(fresh_library, tmp_path) -> None:
    (tmp_path / "cache").write_text("")  # not a folder: nothing can be written under it (as for root, whom
    library = fresh_library()            # file permissions do not stop)
    assert library is not None and library.parent == tmp_path / "tmp" / "vcm-plugin-0"
    assert oct(library.parent.stat().st_mode & 0o777) == "0o700"


def test_no_writable_folder_or_a_foreign_one_means_no_library(fresh_library, tmp_path, caplog) -> None:
    (tmp_path / "cache").write_text("")
    (tmp_path / "tmp").mkdir()
    (tmp_path / "tmp" / "vcm-plugin-0").mkdir(mode=0o777)
    os.chmod(tmp_path / "tmp" / "vcm-plugin-0", 0o777)  # writable by anyone: never load a library from there
    with caplog.at_level("INFO", logger="vcm_plugin.ffmpeg_server"):
        assert fresh_library() is None
    assert "cannot build the ffmpeg fork server" in caplog.text and "not a private folder" in caplog.text


def test_without_a_compiler_a_library_built_earlier_is_used(fresh_library, tmp_path, monkeypatch, caplog) -> None:
    monkeypatch.delenv("CC", raising=False)
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    with caplog.at_level("INFO", logger="vcm_plugin.ffmpeg_server"):
        assert fresh_library() is None
    assert "no C compiler" in caplog.text
    folder = tmp_path / "cache" / "vcm-plugin"
    folder.mkdir(parents=True, mode=0o700)
    source = server_module.SOURCE.read_bytes()
    prebuilt = folder / server_module.library_name(source, "another compiler")
    prebuilt.write_bytes(b"")
    server_module.preload_library.cache_clear()
    assert fresh_library() == prebuilt


def test_without_a_compiler_ffmpeg_runs_as_plain_processes(tmp_path, crops: list[np.ndarray]) -> None:
    """The whole fall-back in a fresh interpreter: no compiler, no library; the same bits; the reason is logged."""
    (tmp_path / "empty").mkdir()
    code = ("import logging, sys, numpy as np; logging.basicConfig(level=logging.INFO); import vcm_plugin as v; "
            "from vcm_plugin.ffmpeg_server import get_server; from vcm_plugin.ffmpeg import find_ffmpeg; "
            "assert get_server(find_ffmpeg()) is None; image = np.load(sys.argv[1]); c = v.get_codec('webp'); "
            "s = c.encode(image, 50); sys.stdout.buffer.write(s.data + c.decode(s).tobytes())")
    np.save(tmp_path / "image.npy", crops[1])
    env = {k: v for k, v in os.environ.items() if k != "CC"}
    env.update(PATH=str(tmp_path / "empty"), XDG_CACHE_HOME=str(tmp_path / "cache"), TMPDIR=str(tmp_path),
               VCM_FFMPEG=EXE)  # type: ignore[arg-type]
    done = subprocess.run([sys.executable, "-c", code, str(tmp_path / "image.npy")], capture_output=True, env=env,
                          timeout=120, check=True)
    codec = get_codec("webp")
    stream = codec.encode(crops[1], 50)
    assert done.stdout == stream.data + codec.decode(stream).tobytes()
    assert b"no C compiler" in done.stderr and b"one process per command" in done.stderr
    assert not list(tmp_path.glob("**/*.so"))


def test_a_server_that_cannot_restart_is_given_up(monkeypatch: pytest.MonkeyPatch, server_pid: int,
                                                 crops: list[np.ndarray], caplog) -> None:
    server = get_server(EXE)
    assert server is not None
    codec = make("webp")
    reference = codec.encode(crops[0], 50).data

    def cannot_start() -> None:
        raise server_module.ServerError("no more servers")

    os.kill(server_pid, signal.SIGKILL)
    wait_for(lambda: gone(server_pid))
    try:
        with monkeypatch.context() as m, caplog.at_level("INFO", logger="vcm_plugin"):
            m.setattr(server, "start", cannot_start)
            assert codec.encode(crops[0], 50).data == reference  # this command: a plain process
            assert get_server(EXE) is None  # and every later one
            assert codec.encode(crops[0], 50).data == reference
        assert "no more servers" in caplog.text
    finally:
        server_module._UNSUPPORTED.clear()
    assert get_server(EXE) is not None and get_server(EXE) is not server  # a new one, for the tests that follow


def test_the_package_data_has_the_c_source() -> None:
    from pathlib import Path

    import tomllib

    pyproject = tomllib.loads((Path(__file__).parents[1] / "pyproject.toml").read_text())
    assert "ffmpeg_server.c" in pyproject["tool"]["setuptools"]["package-data"]["vcm_plugin"]
    assert server_module.SOURCE.is_file() and server_module.SOURCE.parent.name == "vcm_plugin"


def test_a_hung_server_is_given_up(server_pid: int, crops: list[np.ndarray]) -> None:
    codec = make("webp")
    reference = codec.encode(crops[0], 50).data
    os.kill(server_pid, signal.SIGSTOP)
    try:
        start = time.monotonic()
        assert run_ffmpeg(endless_command()[:-1] + ["-frames:v", "1", "pipe:1"], b"", timeout=1.0) \
            == plain_frame()
        assert time.monotonic() - start < 10  # one second waiting for the server, then a plain process
        assert get_server(EXE) is None and codec.encode(crops[0], 50).data == reference
    finally:
        with contextlib.suppress(ProcessLookupError):  # given up: killed already
            os.kill(server_pid, signal.SIGCONT)
        server_module._UNSUPPORTED.clear()
    wait_for(lambda: gone(server_pid), timeout=10)  # stopped for good
    assert get_server(EXE) is not None


def plain_frame() -> bytes:
    return run_ffmpeg(endless_command()[:-1] + ["-frames:v", "1", "pipe:1"], b"", timeout=30, server=False)
