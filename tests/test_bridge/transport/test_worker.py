"""The persistent worker (bridge/transport/worker.py) is safe to run: one worker per folder, no request
answered twice or lost, nothing read or written outside its folder, stale files from earlier workers
harmless, and requests too large for the memory budget refused before any work. Python only: the
requests here are answered by a recording stand-in for bridge.api, or by the real api where the size
check is what is tested.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import scipy.io
from matlab_requests import request_file as _request

from bridge.transport import codec, matfile, worker


class CountingApi:
    """Records every call (thread-safe) and answers with the request's marker value."""

    def __init__(self, delay: float = 0.0):
        self.calls = []
        self.lock = threading.Lock()
        self.delay = delay

    def hessian(self, spec, X, T, *args, **kwargs):
        time.sleep(self.delay)
        with self.lock:
            self.calls.append(float(np.asarray(X).reshape(-1)[0]))
        return {"marker": float(np.asarray(X).reshape(-1)[0])}


def _drop(folder: Path, source: Path, stem: str) -> None:
    """Move a request in as a client does: a partial name first, then a rename."""
    partial = folder / f"{stem}.partial-request.mat"
    partial.write_bytes(source.read_bytes())
    os.replace(partial, folder / f"{stem}.request.mat")


def _wait(predicate, timeout=30.0):
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("timed out")
        time.sleep(0.01)


class Worker:
    """A worker thread on ``folder``; stopped (and joined) on exit."""

    def __init__(self, folder: Path, api=None, **kwargs):
        self.folder, self.stop = folder, threading.Event()
        self.result, self.error = None, None
        self.thread = threading.Thread(target=self._run, args=(api, kwargs), daemon=True)

    def _run(self, api, kwargs):
        try:
            self.result = worker.serve(self.folder, stop=self.stop, poll=0.002, api=api, **kwargs)
        except BaseException as exc:  # noqa: BLE001 - inspected by the tests
            self.error = exc

    def __enter__(self):
        self.thread.start()
        _wait(lambda: (self.folder / "ready").exists() or not self.thread.is_alive())
        return self

    def __exit__(self, *exc):
        self.stop.set()
        self.thread.join(timeout=30)
        assert not self.thread.is_alive()


def _response(folder: Path, stem: str, timeout=30.0) -> dict:
    path = folder / f"{stem}.response.mat"
    _wait(path.exists, timeout)
    return scipy.io.loadmat(path, simplify_cells=True)


def test_one_worker_per_folder(tmp_path):
    folder = tmp_path / "w"
    with Worker(folder, CountingApi()):
        with pytest.raises(worker.WorkerError, match="another worker already serves"):
            worker.serve(folder, stop=threading.Event())
        # the command line refuses too, with its own exit status
        proc = subprocess.run([sys.executable, "-m", "bridge.transport.matfile", "--serve", str(folder)],
                              capture_output=True, text=True, timeout=120)
        assert proc.returncode == 3 and "another worker already serves" in proc.stderr
    # the lock died with the first worker: a new one takes the folder
    with Worker(folder, CountingApi()) as w:
        assert w.error is None and (folder / "ready").exists()


def test_every_request_answered_exactly_once(tmp_path):
    folder = tmp_path / "w"
    source, *_ = _request(tmp_path)
    api = CountingApi()
    with Worker(folder, api):
        raw = {k: v for k, v in scipy.io.loadmat(source).items() if not k.startswith("__")}
        stems = [f"r{i}" for i in range(40)]
        for i, stem in enumerate(stems):  # each request carries its own marker in X
            raw["X"][0, 0] = np.full((3, 1), float(i))
            path = tmp_path / f"{stem}.mat"
            scipy.io.savemat(path, raw, format="5")
            _drop(folder, path, stem)
        answers = [_response(folder, stem) for stem in stems]
    assert sorted(api.calls) == [float(i) for i in range(40)]  # each once, none lost
    assert [a["Result"]["marker"] for a in answers] == [float(i) for i in range(40)]  # each to its own client
    assert not list(folder.glob("*.claimed.mat")) and not list(folder.glob(".tmp-*"))


def test_half_written_file_is_not_consumed(tmp_path):
    folder = tmp_path / "w"
    source, *_ = _request(tmp_path)
    api = CountingApi()
    with Worker(folder, api):
        half = source.read_bytes()[:200]
        (folder / "slow.partial-request.mat").write_bytes(half)
        (folder / "slow.request.mat.tmp").write_bytes(half)
        time.sleep(0.3)
        assert api.calls == [] and (folder / "slow.partial-request.mat").exists()
        (folder / "slow.partial-request.mat").write_bytes(source.read_bytes())  # the client finishes...
        os.replace(folder / "slow.partial-request.mat", folder / "slow.request.mat")  # ...and renames
        assert _response(folder, "slow")["Ok"]
    assert len(api.calls) == 1


def test_directory_or_symlink_named_like_a_request_is_refused(tmp_path):
    folder = tmp_path / "w"
    outside = tmp_path / "outside.mat"
    source, *_ = _request(tmp_path)
    outside.write_bytes(source.read_bytes())
    before = outside.read_bytes()
    api = CountingApi()
    with Worker(folder, api) as w:
        (folder / "dir.request.mat").mkdir()
        (folder / "link.request.mat").symlink_to(outside)
        for stem, kind in (("dir", "not a regular file"), ("link", "symbolic link")):
            resp = _response(folder, stem)
            assert not resp["Ok"] and kind in resp["Error"]["Message"]
            assert resp["Error"]["Identifier"] == "hessiancore:request"
        _drop(folder, source, "good")  # the worker is alive and still serves
        assert _response(folder, "good")["Ok"]
        assert w.thread.is_alive()
    assert outside.read_bytes() == before and api.calls == [0.0]  # the link's target was never read
    assert (folder / "dir.request.mat").is_dir() and (folder / "link.request.mat").is_symlink()


def test_names_with_path_characters_are_not_requests(tmp_path):
    folder = tmp_path / "w"
    source, *_ = _request(tmp_path)
    api = CountingApi()
    with Worker(folder, api):
        (folder / "a b.request.mat").write_bytes(source.read_bytes())
        (folder / "..request.mat").write_bytes(source.read_bytes())
        time.sleep(0.3)
    assert api.calls == []
    assert worker.REQUEST.fullmatch("x.y.request.mat") is None and worker.REQUEST.fullmatch("ok-1_a.request.mat")


def test_stale_stop_file_does_not_stop_a_new_worker(tmp_path):
    folder = tmp_path / "w"
    folder.mkdir(mode=0o700)
    (folder / "stop").touch()
    os.utime(folder / "stop", (time.time() - 3600, time.time() - 3600))
    source, *_ = _request(tmp_path)
    with Worker(folder, CountingApi()) as w:
        _drop(folder, source, "after")
        assert _response(folder, "after")["Ok"] and w.thread.is_alive()
        (folder / "stop").touch()  # a stop file written now ends it
        w.thread.join(timeout=30)
        assert not w.thread.is_alive() and w.result == 1
    assert not (folder / "ready").exists()


def test_request_claimed_by_a_dead_worker_is_answered_not_lost(tmp_path):
    folder = tmp_path / "w"
    folder.mkdir(mode=0o700)
    source, *_ = _request(tmp_path)
    (folder / "orphan.claimed.mat").write_bytes(source.read_bytes())
    with Worker(folder, CountingApi()):
        resp = _response(folder, "orphan")
    assert not resp["Ok"] and "stopped while working on this request" in resp["Error"]["Message"]


def test_inflating_request_refused_before_loading(tmp_path):
    """A small file whose compressed variable inflates to 160 MB, against a 20 MB budget."""
    folder = tmp_path / "w"
    big = tmp_path / "big.mat"
    scipy.io.savemat(big, {"X": np.zeros((20_000_000,))}, format="5", do_compression=True)
    assert big.stat().st_size < 1_000_000
    assert matfile.inflated_size(big) >= 160_000_000
    assert matfile.inflated_size(big, limit=20_000_000) <= 20_000_000 + (1 << 21)  # stops early
    api = CountingApi()
    with Worker(folder, api, memory_budget="20MB"):
        _drop(folder, big, "big")
        resp = _response(folder, "big")
    assert not resp["Ok"] and resp["Error"]["Identifier"] == "hessiancore:memoryBudget"
    assert "refused before loading" in resp["Error"]["Message"] and api.calls == []


def test_inflated_size_counts_uncompressed_files(tmp_path):
    path = tmp_path / "plain.mat"
    scipy.io.savemat(path, {"A": np.ones((100, 10)), "b": "text"}, format="5", do_compression=False)
    assert 8000 <= matfile.inflated_size(path) <= path.stat().st_size
    with pytest.raises(codec.RequestError, match="MAT-file"):
        (tmp_path / "junk.mat").write_bytes(b"not a mat file" * 20)
        matfile.inflated_size(tmp_path / "junk.mat")


def test_worker_ends_with_its_parent_and_when_idle(tmp_path):
    parent = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        with Worker(tmp_path / "p", CountingApi(), parent_pid=parent.pid) as w:
            time.sleep(0.2)
            assert w.thread.is_alive()
            parent.kill()
            parent.wait()
            w.thread.join(timeout=30)
            assert not w.thread.is_alive() and w.error is None
    finally:
        parent.kill()
    with Worker(tmp_path / "i", CountingApi(), idle_timeout=0.3) as w:
        w.thread.join(timeout=30)
        assert not w.thread.is_alive()
    assert worker.process_alive(os.getpid()) and not worker.process_alive(parent.pid)


def test_heartbeat_and_private_folder(tmp_path):
    folder = tmp_path / "w"
    with Worker(folder, CountingApi()):
        first = (folder / "ready").stat().st_mtime
        _wait(lambda: (folder / "ready").stat().st_mtime > first, timeout=10)
        if hasattr(os, "getuid"):
            assert (folder.stat().st_mode & 0o777) == 0o700
    link = tmp_path / "link"
    link.symlink_to(tmp_path / "elsewhere", target_is_directory=True)
    with pytest.raises(worker.WorkerError, match="symbolic link"):
        worker.serve(link, stop=threading.Event())
