"""The ``.mat`` file transport: ``python -m bridge.transport.matfile REQUEST.mat RESPONSE.mat``.

Or, to avoid the Python start-up per call, a worker: ``python -m bridge.transport.matfile --serve DIR``
answers every ``ID.request.mat`` that appears in ``DIR`` with ``ID.response.mat`` (both moved into place
atomically by renaming), until a file named ``stop`` appears there (MATLAB/Octave: ``'Transport', 'server'``
with the same folder; :func:`serve`).

Loads the request with ``scipy.io.loadmat(path, simplify_cells=True)``, decodes it (:mod:`.codec`), calls
the :mod:`bridge.api` function it names, and saves the response (MAT v5, which MATLAB's and Octave's
``load`` read). Every failure after the request is read -- a bad network, an unsupported layer, a
missing dependency -- is written into the response as an error for MATLAB to raise, so the exit status
is 0 whenever a response was written; it is 2 when even that was impossible (message on stderr).

MATLAB's ``py.`` transport calls :func:`run` in-process with the same two paths.
"""

from __future__ import annotations

import importlib
import os
import sys
import threading
import time
from pathlib import Path

REQUEST_SUFFIX = ".request.mat"
RESPONSE_SUFFIX = ".response.mat"


def run(request_path: str, response_path: str, api=None) -> bool:
    """Serve one request file; write the response file. True when the call succeeded.

    ``api``: the module (or object) providing the functions, default :mod:`bridge.api`.
    """
    import scipy.io

    from . import codec

    try:
        raw = scipy.io.loadmat(str(request_path), simplify_cells=True)
        name, args, kwargs = codec.decode(raw)
        if api is None:
            api = importlib.import_module("bridge.api")
        result = getattr(api, name)(*args, **kwargs)
        response = codec.ok_response(result)
    except Exception as exc:  # noqa: BLE001 - every error goes back to MATLAB with an identifier
        response = codec.error_response(exc)
    scipy.io.savemat(str(response_path), response, format="5", do_compression=True, oned_as="column")
    return bool(response["Ok"])


def serve(directory, *, stop: threading.Event | None = None, poll: float = 0.01, api=None) -> int:
    """Answer request files dropped into ``directory`` until ``stop`` is set or a file ``stop`` appears.

    ``ID.request.mat`` -> ``ID.response.mat`` (written under a temporary name, then renamed, so the
    client never reads half a file); the request is deleted. Returns the number of requests served.
    """
    folder = Path(directory)
    folder.mkdir(parents=True, exist_ok=True)
    served = 0
    while not (stop is not None and stop.is_set()) and not (folder / "stop").exists():
        for request in sorted(folder.glob("*" + REQUEST_SUFFIX)):
            stem = request.name[: -len(REQUEST_SUFFIX)]
            partial = folder / f"{stem}.partial-response.mat"
            run(request, partial, api=api)
            request.unlink(missing_ok=True)
            os.replace(partial, folder / (stem + RESPONSE_SUFFIX))
            served += 1
        time.sleep(poll)
    return served


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) == 2 and argv[0] == "--serve":
        print(f"hessiancore: serving requests in {argv[1]} (create a file named 'stop' there to end)", flush=True)
        serve(argv[1])
        return 0
    if len(argv) != 2:
        print("usage: python -m bridge.transport.matfile REQUEST.mat RESPONSE.mat\n"
              "       python -m bridge.transport.matfile --serve DIRECTORY", file=sys.stderr)
        return 2
    try:
        run(argv[0], argv[1])
    except Exception as exc:  # noqa: BLE001 - could not even write the response
        print(f"hessiancore: could not write the response {argv[1]}: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
