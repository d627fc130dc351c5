"""An ffmpeg fork server: the same ffmpeg command, without the ~10 ms of process start-up.

Starting the bundled ffmpeg (a 170 MB position-independent executable) costs about 10-13 ms
before its ``main()`` runs: the dynamic loader applies ~200,000 relocations and touches
~2,000 pages. For small pictures that is most of a decode (see
``benchmarks/small_pictures.py``). The fork server pays it once per Python process:
``ffmpeg_server.c`` (compiled on first use with the system C compiler into the user's
cache folder, then reused) is preloaded into the unmodified ffmpeg, which then waits for
requests on a socket instead of running; each request forks an already-loaded copy that
calls ffmpeg's own ``main()`` with the request's argument list, environment, working
directory and CPU affinity (the calling thread's, at that moment), its stdin and stderr on
the caller's pipes, stdout on /dev/null and the coded or decoded picture on ``pipe:3``. It
is the same program run on the same arguments and input, so its output is byte for byte
what ``ffmpeg ARGS`` started afresh writes (``tests/test_small_pictures.py`` checks every
ffmpeg codec).

Safety: one server per Python process and ffmpeg executable, shared by all threads (each
request has its own reply socket and helper process; sending is locked); a forked Python
child (a ``fork`` pool worker) drops its parent's without touching it and starts its own; a
``spawn`` / ``forkserver`` worker or a Dask worker process is a fresh interpreter that starts
its own. A server that died is restarted on the next request (commands already running
finish: each has its own helper); one that cannot be restarted is given up for plain
processes, as is any command the server could not start. A helper that dies during a
command makes it fail at once with :class:`ServerError` (the caller names the codec), and
its ffmpeg dies with it. Nothing waits without the caller's time limit; on a time-out the
helper, ffmpeg's parent, kills ffmpeg (no pid is ever signalled from here, so a reused pid
cannot be hit), as it does when the caller dies mid-command. Servers exit when their
Python process closes the control socket: at exit, or when it dies.

The compiled library is cached as ``ffmpeg-server-<source hash>-<compiler hash>.so`` in
:func:`cache_dir`, else (a read-only cache folder) in a private folder of the temp folder.
Where the server cannot run (no C compiler, no writable private folder, a statically linked
ffmpeg or a script, not Linux) or when ``VCM_FFMPEG_SERVER=0``, :func:`get_server` returns
``None`` (the reason is logged once, at info level) and callers start ffmpeg as a plain
process.
"""

from __future__ import annotations

import atexit
import contextlib
import functools
import hashlib
import logging
import os
import shlex
import shutil
import socket
import stat
import struct
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

log = logging.getLogger(__name__)

#: environment variable: "0" (or "false", "no", "off") starts every ffmpeg as a plain process
SERVER_ENV = "VCM_FFMPEG_SERVER"
#: the output descriptor of a served ffmpeg: commands end with ``pipe:3``
OUTPUT_FD = 3
PROTOCOL_VERSION = 2
SOURCE = Path(__file__).with_name("ffmpeg_server.c")
_START_TIMEOUT = 20.0  # seconds for a new server to say it is ready
_MAX_REQUEST = 64 * 1024  # bytes of arguments + environment in one request (larger: a plain process)
_RECORD = struct.Struct("=ci")


class ServerError(RuntimeError):
    """The fork server could not run a command (it died, or sent something unexpected)."""


def server_enabled() -> bool:
    """Whether ffmpeg commands may use the fork server (``$VCM_FFMPEG_SERVER`` is not 0 / false / no / off)."""
    return os.environ.get(SERVER_ENV, "1").strip().lower() not in ("0", "false", "no", "off")


# -- building the preload library ----------------------------------------------------------
COMPILE_FLAGS = ("-O2", "-shared", "-fPIC")


def compile_command(compiler: list[str], source: str | os.PathLike[str], output: str | os.PathLike[str]) -> list[str]:
    """The C compiler command (``compiler``: the program and its own arguments) building the library ``output``."""
    return [*compiler, *COMPILE_FLAGS, "-o", str(output), str(source), "-ldl"]


def cache_dir() -> Path:
    """Where the compiled preload library is kept: ``$XDG_CACHE_HOME/vcm-plugin`` (default ``~/.cache``)."""
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "vcm-plugin"


def _temp_dir() -> Path:
    """The second place for the library, when the cache folder is not writable: a private folder in the temp folder."""
    return Path(tempfile.gettempdir()) / f"vcm-plugin-{os.getuid()}"


def find_compiler() -> tuple[list[str], str] | None:
    """(command, identity) of the C compiler (``$CC``, else cc, gcc, clang); ``None`` when there is none.

    The identity (the resolved path and the first line of ``--version``) keys the compiled
    library, with the source: another compiler or an upgraded one builds its own.
    """
    names = [shlex.split(os.environ["CC"])] if os.environ.get("CC", "").strip() else []
    for command in [*names, ["cc"], ["gcc"], ["clang"]]:
        found = shutil.which(command[0])
        if not found:
            continue
        try:
            done = subprocess.run([found, *command[1:], "--version"], capture_output=True, timeout=30, check=False)
        except (OSError, subprocess.TimeoutExpired):
            continue
        lines = done.stdout.decode("utf-8", errors="replace").strip().splitlines()
        if done.returncode == 0 and lines:
            return [found, *command[1:]], "\n".join([os.path.realpath(found), *command[1:], lines[0]])
    return None


def library_name(source: bytes, compiler_identity: str) -> str:
    """File name of the compiled library: keyed by the source, the compiler and its flags."""
    key = hashlib.sha256("\n".join([compiler_identity, *COMPILE_FLAGS]).encode()).hexdigest()[:12]
    return f"ffmpeg-server-{hashlib.sha256(source).hexdigest()[:16]}-{key}.so"


def _private_folder(folder: Path) -> str | None:
    """Why ``folder`` cannot hold a library we load (absent, not ours, writable by others); ``None``: it can."""
    try:
        st = os.lstat(folder)
    except OSError as exc:
        return str(exc)
    if not stat.S_ISDIR(st.st_mode):
        return "not a folder"
    if st.st_uid != os.getuid() or st.st_mode & 0o022:
        return "not a private folder of this user"
    return None


def _build(compiler: list[str], source: bytes, folder: Path, name: str) -> Path:
    """Compile the library into ``folder``/``name`` (atomically); raises OSError with the reason."""
    folder.mkdir(parents=True, exist_ok=True, mode=0o700)
    if (why := _private_folder(folder)) is not None:
        raise OSError(why)
    target = folder / name
    tmp = folder / f".{name}.{os.getpid()}.{threading.get_ident()}.tmp"
    try:
        done = subprocess.run(compile_command(compiler, SOURCE, tmp), capture_output=True, timeout=120, check=False)
        if done.returncode != 0:
            raise OSError(f"{compiler[0]} failed: {done.stderr.decode('utf-8', errors='replace').strip()[-400:]}")
        os.replace(tmp, target)  # atomic: processes building at once all end with one good file
    except subprocess.TimeoutExpired as exc:
        raise OSError(f"{compiler[0]} took more than 120 s") from exc
    finally:
        with contextlib.suppress(OSError):
            tmp.unlink()
    return target


@functools.lru_cache(maxsize=1)
def preload_library() -> Path | None:
    """The compiled server library (built once per source version and compiler); ``None`` when there is none.

    Looked for, then built, in :func:`cache_dir`, then in a private folder of the temp
    folder (for a read-only cache folder). Without a C compiler, a library built earlier
    from the same source (by any compiler) is used. Why there is none is logged (info).
    """
    if not sys.platform.startswith("linux"):
        log.info("the ffmpeg fork server runs on Linux only: ffmpeg runs as one process per command")
        return None
    try:
        source = SOURCE.read_bytes()
    except OSError as exc:  # an installation without the package data
        log.info("no source for the ffmpeg fork server (%s): ffmpeg runs as one process per command", exc)
        return None
    compiler = find_compiler()
    folders = [f for f in (cache_dir(), _temp_dir()) if not set(str(f)) & set(" \t\n:")]  # LD_PRELOAD splits there
    for folder in folders:
        if _private_folder(folder) is not None:  # absent, or others could put a library there
            continue
        if compiler is not None:
            if (folder / library_name(source, compiler[1])).is_file():
                return folder / library_name(source, compiler[1])
        elif built := sorted(folder.glob(f"ffmpeg-server-{hashlib.sha256(source).hexdigest()[:16]}-*.so")):
            return built[0]
    if compiler is None:
        log.info("no C compiler ($CC, cc, gcc or clang) to build the ffmpeg fork server: "
                 "ffmpeg runs as one process per command (slower for small pictures)")
        return None
    reasons = [] if folders else ["the cache and temp folder paths hold a space or ':', which LD_PRELOAD cannot take"]
    for folder in folders:
        try:
            return _build(compiler[0], source, folder, library_name(source, compiler[1]))
        except OSError as exc:
            reasons.append(f"{folder}: {exc}")
    log.info("cannot build the ffmpeg fork server (%s): ffmpeg runs as one process per command", "; ".join(reasons))
    return None


# -- the server ------------------------------------------------------------------------------
def _recv_record(sock: socket.socket, deadline: float, what: str) -> tuple[bytes, int]:
    """One (kind, value) record from ``sock`` before ``deadline`` (time.monotonic seconds)."""
    sock.settimeout(max(deadline - time.monotonic(), 0.001))
    try:
        data = sock.recv(64)
    except TimeoutError as exc:  # socket.timeout is TimeoutError from Python 3.10
        raise TimeoutError(f"ffmpeg server: no {what} in time") from exc
    except OSError as exc:
        raise ServerError(f"ffmpeg server: lost while waiting for {what} ({exc})") from exc
    if len(data) != _RECORD.size:
        raise ServerError(f"ffmpeg fork server: its helper process died while waiting for {what}" if not data else
                          f"ffmpeg server: malformed reply while waiting for {what}")
    kind, value = _RECORD.unpack(data)
    return kind, value


class ServedProcess:
    """An ffmpeg started by the server: its ``pid``, :meth:`wait` and :meth:`kill` (like ``subprocess.Popen``)."""

    def __init__(self, reply: socket.socket, pid: int) -> None:
        self.pid = pid
        self.returncode: int | None = None
        self._reply = reply

    def wait(self, timeout: float | None = None) -> int:
        """The exit status (negative: killed by that signal); ``subprocess.TimeoutExpired`` after ``timeout`` s."""
        if self.returncode is None:
            deadline = time.monotonic() + (timeout if timeout is not None else 365 * 86400.0)
            try:
                kind, value = _recv_record(self._reply, deadline, "the exit status")
            except TimeoutError as exc:
                raise subprocess.TimeoutExpired(f"ffmpeg (pid {self.pid})", timeout or 0) from exc
            except ServerError:
                self._reply.close()  # the waiter died, and ffmpeg with it
                raise
            if kind != b"S":
                raise ServerError(f"ffmpeg server: unexpected reply {kind!r} instead of an exit status")
            self.returncode = os.waitstatus_to_exitcode(value)
            self._reply.close()
        return self.returncode

    def kill(self) -> None:
        """Have ffmpeg killed (SIGKILL) by its waiter, its parent, so no reused pid can be hit; no-op once it ended.

        Shutting down our end of the reply socket is the signal; the exit status still
        arrives (:meth:`wait`). Should the waiter be gone, ffmpeg died with it (``PR_SET_PDEATHSIG``).
        """
        if self.returncode is None:
            with contextlib.suppress(OSError):
                self._reply.shutdown(socket.SHUT_WR)

    def close(self) -> None:
        """Release the reply socket (ffmpeg is killed if it still runs)."""
        self.kill()
        self._reply.close()


class FFmpegServer:
    """A fork server for one ffmpeg executable (see the module docstring); start with :meth:`start`."""

    def __init__(self, executable: str, library: Path, identity: tuple[int, int, int] | None = None) -> None:
        self.executable = executable
        self.library = library
        self.identity = identity  # of the executable file (see get_server)
        self._lock = threading.Lock()
        self._proc: subprocess.Popen[bytes] | None = None
        self._ctl: socket.socket | None = None
        #: why the server cannot be (re)started, once that failed: :func:`get_server` then gives up on it
        self.broken: str | None = None

    def start(self) -> None:
        """Start (or restart) the server process and wait until it is ready; raises :class:`ServerError`."""
        self.close()
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        preload = " ".join(filter(None, [str(self.library), os.environ.get("LD_PRELOAD", "")]))  # keep the user's
        env = dict(os.environ, LD_PRELOAD=preload, VCM_FFMPEG_SERVER_FD=str(theirs.fileno()))
        try:
            proc = subprocess.Popen([self.executable], stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                    stderr=subprocess.DEVNULL, pass_fds=(theirs.fileno(),), env=env)
        except OSError as exc:
            ours.close()
            raise ServerError(f"cannot start {self.executable}: {exc}") from exc
        finally:
            theirs.close()
        try:
            kind, value = _recv_record(ours, time.monotonic() + _START_TIMEOUT, "the ready message")
            if kind != b"R" or value != PROTOCOL_VERSION:
                raise ServerError(f"ffmpeg server: unexpected ready message {kind!r} {value}")
        except (ServerError, TimeoutError) as exc:
            ours.close()
            proc.kill()
            proc.wait()
            raise ServerError(f"{self.executable} did not start as a fork server ({exc}); "
                              f"a statically linked ffmpeg cannot") from exc
        self._proc, self._ctl = proc, ours

    def alive(self) -> bool:
        """Whether the server process runs."""
        return self._proc is not None and self._proc.poll() is None

    def launch(self, command: list[str], stdin_fd: int, output_fd: int, stderr_fd: int,
               timeout: float) -> ServedProcess:
        """Start ``command`` (its output argument must be ``pipe:3``) with the given pipe ends; ``timeout`` in s.

        The caller closes its copies of the three descriptors afterwards. A server found dead
        is restarted once; raises :class:`ServerError` when the command could not be started.
        """
        cpus = ",".join(map(str, sorted(os.sched_getaffinity(0)))) if hasattr(os, "sched_getaffinity") else ""
        try:
            cwd = os.getcwd()
        except OSError as exc:  # deleted: a plain process could still run there
            raise ServerError(f"ffmpeg server: no working directory ({exc})") from exc
        fields = [b"VCM2", os.fsencode(cwd), cpus.encode(), str(len(command)).encode(),
                  *(os.fsencode(a) for a in command), *(os.fsencode(f"{k}={v}") for k, v in os.environ.items())]
        if any(b"\0" in f for f in fields):
            raise ValueError("an ffmpeg argument or environment entry contains a NUL byte")
        payload = b"\0".join(fields) + b"\0"
        if len(payload) > _MAX_REQUEST:
            raise ServerError(f"ffmpeg server: request of {len(payload)} bytes is too large")
        limit = min(timeout, _START_TIMEOUT)  # a fork takes milliseconds: longer is a hung server
        reply = self._send(payload, (stdin_fd, output_fd, stderr_fd))
        try:
            kind, value = _recv_record(reply, time.monotonic() + limit, "the process id")
        except TimeoutError as exc:
            reply.close()  # should it start after all, its waiter kills it
            self.give_up(f"ffmpeg server: a command did not start within {limit:g} s")
            raise ServerError(f"ffmpeg server: the command did not start within {limit:g} s") from exc
        except BaseException:
            reply.close()
            raise
        if kind == b"P":
            return ServedProcess(reply, value)
        reply.close()
        raise ServerError(f"ffmpeg server: cannot start the command ({os.strerror(value)})" if kind == b"E"
                          else f"ffmpeg server: unexpected reply {kind!r}")

    def _send(self, payload: bytes, fds: tuple[int, int, int]) -> socket.socket:
        """Send one request; return the reply socket. Starts the server when needed, restarting a dead one once."""
        with self._lock:
            for attempt in (1, 2):
                if not self.alive():
                    try:
                        self.start()
                    except ServerError as exc:
                        self.broken = str(exc)
                        raise
                assert self._ctl is not None
                reply, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
                try:
                    socket.send_fds(self._ctl, [payload], [theirs.fileno(), *fds])
                    return reply
                except OSError as exc:  # the server died since the last request
                    reply.close()
                    self.close()
                    if attempt == 2:
                        raise ServerError(f"ffmpeg server: cannot send a request ({exc})") from exc
                finally:
                    theirs.close()
        raise AssertionError("unreachable")

    def give_up(self, reason: str) -> None:
        """Stop the server for good (:func:`get_server` then returns ``None`` for its executable)."""
        with self._lock:
            self.broken = reason
            self.close()

    def close(self, wait: float = 0.0) -> None:
        """Stop the server (closing its control socket ends it); wait up to ``wait`` seconds, then kill it."""
        ctl, proc, self._ctl, self._proc = self._ctl, self._proc, None, None
        if ctl is not None:
            ctl.close()
        if proc is not None and proc.poll() is None:
            try:
                proc.wait(timeout=wait) if wait > 0 else None
            except subprocess.TimeoutExpired:
                pass
            if proc.poll() is None:
                proc.kill()
                proc.wait()

    def forget(self) -> None:
        """In a forked child: drop the parent's server without signalling it (closing only our copy of the socket)."""
        if self._ctl is not None:
            with contextlib.suppress(OSError):
                self._ctl.close()
        if self._proc is not None:
            self._proc.returncode = 0  # not our child: never wait for it or warn about it
        self._ctl, self._proc, self._lock = None, None, threading.Lock()


_SERVERS: dict[str, FFmpegServer] = {}
_UNSUPPORTED: set[tuple[str, tuple[int, int, int]]] = set()
_SERVERS_LOCK = threading.Lock()


def _identity(path: str) -> tuple[int, int, int] | None:
    """(inode, size, mtime ns) of an ELF executable; ``None`` for anything else (a script cannot be served)."""
    try:
        with open(path, "rb") as f:
            if f.read(4) != b"\x7fELF":
                return None
            st = os.fstat(f.fileno())
    except OSError:
        return None
    return st.st_ino, st.st_size, st.st_mtime_ns


def get_server(executable: str) -> FFmpegServer | None:
    """This process's fork server for ``executable`` (started on first use); ``None`` when it cannot run here.

    A server is for one file: when the executable is replaced (an upgrade), the next call starts a new one.
    """
    if not server_enabled():
        return None
    path = shutil.which(executable) or executable
    identity = _identity(path)
    if identity is None:
        return None
    with _SERVERS_LOCK:
        server = _SERVERS.get(path)
        if server is not None and server.broken is not None:
            log.info("the ffmpeg fork server stopped and cannot be restarted (%s): ffmpeg runs as one process "
                     "per command", server.broken)
            if server.identity is not None:
                _UNSUPPORTED.add((path, server.identity))
            del _SERVERS[path]
            server.close()
            return None
        if server is not None and server.identity == identity:
            return server
        if (path, identity) in _UNSUPPORTED:
            return None
        if server is not None:
            server.close()
        library = preload_library()
        if library is None:
            _UNSUPPORTED.add((path, identity))
            return None
        server = FFmpegServer(path, library, identity)
        try:
            server.start()
        except ServerError as exc:
            log.info("%s; ffmpeg runs as one process per command", exc)
            _UNSUPPORTED.add((path, identity))
            return None
        _SERVERS[path] = server
        return server


def close_servers() -> None:
    """Stop every fork server of this process (registered at exit)."""
    with _SERVERS_LOCK:
        servers = list(_SERVERS.values())
        _SERVERS.clear()
    for server in servers:
        server.close(wait=1.0)


def _after_fork_in_child() -> None:
    global _SERVERS_LOCK
    _SERVERS_LOCK = threading.Lock()
    for server in _SERVERS.values():
        server.forget()
    _SERVERS.clear()


atexit.register(close_servers)
if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)
