"""The persistent worker: ``python -m bridge.transport.matfile --serve FOLDER`` answers request files.

MATLAB and Octave start it on first use (``'Transport', 'server'``, the default) so that the Python
start-up -- importing PyTorch, seconds -- is paid once per session. The protocol, all inside ``FOLDER``:

* a client writes ``ID.partial-request.mat`` (any name that does not match the request pattern) and renames
  it to ``ID.request.mat``; ``ID`` is 1-100 letters, digits, ``_`` or ``-``. Only regular files whose whole
  name matches are requests: a half-written file, a directory or a symbolic link named like a request is
  never read (a link or directory gets an error response, once);
* the worker claims a request by renaming it to ``ID.claimed.mat`` (so no request is answered twice), checks
  that its inflated size fits the memory budget, answers it, and renames its answer into place as
  ``ID.response.mat`` (written first to a fresh temporary file: the client never reads half a response);
* ``ready`` (JSON: pid, request format, start time) exists while a worker serves the folder; its
  modification time is refreshed every second (a heartbeat the client reads); ``worker.lock`` holds an
  exclusive lock for the worker's lifetime, so a second worker for the same folder refuses to start;
* a file named ``stop`` ends the worker; one left over from an earlier worker is removed at start;
* a request claimed by a worker that died is answered with an error on the next start (not lost);
* a folder the worker created is removed when it ends, if nothing but its lock is left in it.

The worker also ends after ``idle_timeout`` seconds without requests, or when ``parent_pid`` (the MATLAB or
Octave process that started it) is gone. The folder is created private to the user (mode 0700); an
existing folder must be a real directory owned by the user.
"""

from __future__ import annotations

import json
import os
import re
import sys
import tempfile
import threading
import time
from pathlib import Path

from . import matfile

REQUEST = re.compile(r"([A-Za-z0-9_-]{1,100})\.request\.mat")
READY, LOCK, STOP, LOG = "ready", "worker.lock", "stop", "worker.log"
HEARTBEAT_SECONDS = 1.0


class WorkerError(RuntimeError):
    """The worker cannot serve this folder (another worker holds it, or the folder is unsafe)."""


# -- the folder and its lock -----------------------------------------------------------------------------
def prepare_folder(directory) -> Path:
    """The folder, created private (0700) if absent; an existing one must be a directory we own."""
    folder = Path(directory)
    if folder.is_symlink():
        raise WorkerError(f"{folder} is a symbolic link; give the worker a real directory")
    folder.mkdir(mode=0o700, parents=True, exist_ok=True)  # an existing folder keeps its mode
    if not folder.is_dir():
        raise WorkerError(f"{folder} is not a directory")
    if hasattr(os, "getuid") and folder.stat().st_uid != os.getuid():
        raise WorkerError(f"{folder} belongs to another user; the worker serves only a folder of its own")
    return folder


class FolderLock:
    """An exclusive, non-blocking lock on ``FOLDER/worker.lock`` for the lifetime of one worker.

    The operating system releases it when the process ends, however it ends, so a crashed worker never
    blocks a new one; a second live worker (or thread) gets :class:`WorkerError`."""

    def __init__(self, folder: Path):
        self.path = folder / LOCK
        flags = os.O_RDWR | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0)
        self.fd = os.open(self.path, flags, 0o600)
        try:
            _lock(self.fd)
        except OSError:
            os.close(self.fd)
            owner = self.path.read_text(errors="replace").strip() or "unknown"
            raise WorkerError(f"another worker already serves {folder} (pid {owner})") from None
        os.ftruncate(self.fd, 0)
        os.write(self.fd, str(os.getpid()).encode())

    def release(self) -> None:
        if self.fd is not None:
            _unlock(self.fd)
            os.close(self.fd)
            self.fd = None


if os.name == "nt":  # pragma: no cover - exercised on Windows only
    import msvcrt

    def _lock(fd):
        os.lseek(fd, 0, os.SEEK_SET)
        msvcrt.locking(fd, msvcrt.LK_NBLCK, 1)

    def _unlock(fd):
        os.lseek(fd, 0, os.SEEK_SET)
        msvcrt.locking(fd, msvcrt.LK_UNLCK, 1)
else:
    import fcntl

    def _lock(fd):
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)

    def _unlock(fd):
        fcntl.flock(fd, fcntl.LOCK_UN)


def process_alive(pid: int) -> bool:
    """Whether process ``pid`` still runs (never signals it: on Windows os.kill would terminate it)."""
    if os.name == "nt":  # pragma: no cover - Windows only
        import ctypes

        kernel = ctypes.windll.kernel32
        handle = kernel.OpenProcess(0x1000, False, pid)  # PROCESS_QUERY_LIMITED_INFORMATION
        if not handle:
            return False
        code = ctypes.c_ulong()
        ok = kernel.GetExitCodeProcess(handle, ctypes.byref(code))
        kernel.CloseHandle(handle)
        return bool(ok) and code.value == 259  # STILL_ACTIVE
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


# -- one request ---------------------------------------------------------------------------------------
def _write_atomically(folder: Path, name: str, write) -> None:
    """``write(file object)`` into a fresh temporary file of ``folder``, then rename it to ``name``."""
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=".tmp-", suffix=".mat")
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
        os.replace(tmp, folder / name)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _answer(folder: Path, stem: str, claimed: Path, api, max_bytes: int | None) -> None:
    info: dict = {}

    def write(f):
        matfile.run(claimed, f, api=api, max_bytes=max_bytes, info=info)

    try:
        _write_atomically(folder, stem + matfile.RESPONSE_SUFFIX, write)
    finally:
        claimed.unlink(missing_ok=True)
    # One line per request in the worker's log: what ran and how long Python took (benchmarks read it).
    print(f"request {stem} {info.get('function')} {info.get('seconds', float('nan')):.4f} s", flush=True)


def _error_response(folder: Path, stem: str, message: str) -> None:
    import scipy.io

    from . import codec

    response = codec.error_response(codec.RequestError(message))
    _write_atomically(folder, stem + matfile.RESPONSE_SUFFIX,
                      lambda f: scipy.io.savemat(f, response, format="5", oned_as="column"))


def _requests(folder: Path, refused: set[str]):
    """Regular files named ID.request.mat, oldest first; anything else named like one is answered once
    with an error and never opened."""
    found = []
    with os.scandir(folder) as entries:
        for entry in entries:
            m = REQUEST.fullmatch(entry.name)
            if not m:
                continue
            if entry.is_symlink() or not entry.is_file(follow_symlinks=False):
                if entry.name not in refused:
                    refused.add(entry.name)
                    kind = "a symbolic link" if entry.is_symlink() else "not a regular file"
                    _error_response(folder, m.group(1), f"{entry.name} is {kind}; requests must be regular "
                                                        "files moved into the folder")
                continue
            try:
                found.append((entry.stat(follow_symlinks=False).st_mtime_ns, entry.name, m.group(1)))
            except FileNotFoundError:
                continue
    return sorted(found)


# -- the loop ------------------------------------------------------------------------------------------
def serve(directory, *, stop: threading.Event | None = None, poll: float = 0.01, api=None,
          idle_timeout: float | None = None, parent_pid: int | None = None, memory_budget=None) -> int:
    """Answer request files in ``directory`` until stopped (see the module docstring); the number served.

    ``memory_budget``: largest inflated request accepted, bytes or text such as '4GB' (default: the
    engine's default budget, half the free memory). Raises :class:`WorkerError` when another worker
    serves the folder or the folder is unsafe."""
    created = not Path(directory).exists()
    folder = prepare_folder(directory)
    lock = FolderLock(folder)
    started = time.time()
    done = threading.Event()
    try:
        (folder / STOP).unlink(missing_ok=True)  # we hold the lock: any stop file is from an earlier worker
        for orphan in folder.glob("*.claimed.mat"):  # claimed by a worker that died: answer, don't drop
            stem = orphan.name[: -len(".claimed.mat")]
            _error_response(folder, stem, "the previous hessiancore worker stopped while working on this "
                                          f"request (see {folder / LOG}); the request was not run again")
            orphan.unlink(missing_ok=True)
        budget = _budget(memory_budget)
        info = {"pid": os.getpid(), "format": "hessiancore.request/1", "started": started}
        _write_atomically(folder, READY, lambda f: f.write(json.dumps(info).encode()))
        beat = threading.Thread(target=_heartbeat, args=(folder / READY, done), daemon=True)
        beat.start()
        served, refused, last = 0, set(), time.monotonic()
        while not (stop is not None and stop.is_set()) and not _stop_requested(folder, started):
            for _, name, stem in _requests(folder, refused):
                claimed = folder / f"{stem}.claimed.mat"
                try:
                    os.replace(folder / name, claimed)
                except FileNotFoundError:
                    continue  # taken or withdrawn meanwhile
                try:
                    _answer(folder, stem, claimed, api, budget)
                except Exception as exc:  # noqa: BLE001 - one bad request must not end the worker
                    print(f"hessiancore worker: request {stem}: {type(exc).__name__}: {exc}", file=sys.stderr)
                served += 1
                last = time.monotonic()
            if idle_timeout is not None and time.monotonic() - last > idle_timeout:
                break
            if parent_pid is not None and not process_alive(parent_pid):
                break
            time.sleep(poll)
        return served
    finally:
        done.set()
        (folder / READY).unlink(missing_ok=True)
        lock.release()
        if created and [p.name for p in folder.iterdir()] == [LOCK]:  # leave no empty folder behind
            (folder / LOCK).unlink(missing_ok=True)
            try:
                folder.rmdir()
            except OSError:
                pass


def _stop_requested(folder: Path, started: float) -> bool:
    path = folder / STOP
    try:
        st = path.stat(follow_symlinks=False)
    except FileNotFoundError:
        return False
    return st.st_mtime >= started - 1.0


def _heartbeat(path: Path, done: threading.Event) -> None:
    while not done.wait(HEARTBEAT_SECONDS):
        try:
            os.utime(path, follow_symlinks=os.utime not in os.supports_follow_symlinks)
        except OSError:
            pass


def _budget(memory_budget) -> int:
    import torch

    from hessian_core.memory import resolve_budget

    return resolve_budget(memory_budget, torch.device("cpu"))


__all__ = ["serve", "prepare_folder", "FolderLock", "WorkerError", "process_alive", "REQUEST"]
