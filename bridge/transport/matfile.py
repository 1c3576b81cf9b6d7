"""The ``.mat`` file transport: ``python -m bridge.transport.matfile REQUEST.mat RESPONSE.mat``.

Or, to pay the Python start-up once, a worker (:mod:`.worker`)::

    python -m bridge.transport.matfile --serve FOLDER [--idle-timeout SECONDS] [--parent-pid PID]
                                                      [--memory-budget BYTES]

which answers every ``ID.request.mat`` moved into ``FOLDER`` with ``ID.response.mat``. MATLAB and Octave
start it themselves on first use (``'Transport', 'server'``, the default).

Loads the request with ``scipy.io.loadmat(path, simplify_cells=True)``, decodes it (:mod:`.codec`), calls
the :mod:`bridge.api` function it names, and saves the response (MAT v5, which MATLAB's and Octave's
``load`` read). Every failure after the request is read -- a bad network, an unsupported layer, a
missing dependency, a request too large for the memory budget -- is written into the response as an
error for MATLAB to raise, so the exit status is 0 whenever a response was written; it is 2 when even
that was impossible (message on stderr), 3 when ``--serve`` found another worker serving the folder.

MATLAB's ``py.`` transport calls :func:`run` in-process with the same two paths.
"""

from __future__ import annotations

import importlib
import struct
import sys
import zlib

REQUEST_SUFFIX = ".request.mat"
RESPONSE_SUFFIX = ".response.mat"
_MI_COMPRESSED, _MI_MATRIX = 15, 14


def run(request_path, response, api=None, max_bytes: int | None = None, info: dict | None = None) -> bool:
    """Serve one request file; write the response (a path or a binary file object). True on success.

    ``api``: the module (or object) providing the functions, default :mod:`bridge.api`. ``max_bytes``: refuse
    (with a ``hessiancore:memoryBudget`` error response) a request whose data inflate to more bytes.
    ``info``: a dict that receives ``function`` (the name requested) and ``seconds`` (the whole Python side:
    reading, computing, writing)."""
    import time

    import scipy.io

    from . import codec

    start = time.perf_counter()
    name = None
    try:
        if max_bytes is not None:
            check_inflated_size(request_path, max_bytes)
        raw = scipy.io.loadmat(request_path, simplify_cells=True)
        name = raw.get("Function") if isinstance(raw.get("Function"), str) else None
        name, args, kwargs = codec.decode(raw)
        if api is None:
            api = importlib.import_module("bridge.api")
        result = getattr(api, name)(*args, **kwargs)
        response_data = codec.ok_response(result)
    except Exception as exc:  # noqa: BLE001 - every error goes back to MATLAB with an identifier
        response_data = codec.error_response(exc, name)
    scipy.io.savemat(response, response_data, format="5", do_compression=True, oned_as="column")
    if info is not None:
        info.update(function=name, seconds=time.perf_counter() - start)
    return bool(response_data["Ok"])


def inflated_size(path, limit: int | None = None) -> int:
    """Bytes the variables of a MAT v5 file occupy once decompressed, read without loading them.

    Compressed variables are inflated as a stream and counted; counting stops as soon as ``limit`` is
    passed (so a small file that would inflate to gigabytes costs no memory)."""
    from ..identifiers import RequestError

    total = 0
    with open(path, "rb") as f:
        header = f.read(128)
        if len(header) < 128 or header[126:128] not in (b"IM", b"MI"):
            raise RequestError(f"{path} is not a MAT-file version 5 (-v7) file")
        order = "<" if header[126:128] == b"IM" else ">"
        while True:
            tag = f.read(8)
            if len(tag) < 8:
                break
            kind, nbytes = struct.unpack(order + "II", tag)
            if kind == _MI_COMPRESSED:
                inflate = zlib.decompressobj()
                left = nbytes
                while left > 0:
                    chunk = f.read(min(left, 1 << 16))
                    if not chunk:
                        break
                    left -= len(chunk)
                    data = inflate.decompress(chunk, 1 << 20)
                    while True:
                        total += len(data)
                        if limit is not None and total > limit:
                            return total
                        if not inflate.unconsumed_tail:
                            break
                        data = inflate.decompress(inflate.unconsumed_tail, 1 << 20)
            else:
                total += nbytes
                f.seek(nbytes + (-nbytes % 8), 1)
            if limit is not None and total > limit:
                return total
    return total


def check_inflated_size(path, max_bytes: int) -> None:
    """MemoryBudgetError when the request's data would not fit ``max_bytes`` once loaded."""
    from hessian_core.errors import MemoryBudgetError
    from hessian_core.memory import format_bytes

    size = inflated_size(path, max_bytes)
    if size > max_bytes:
        raise MemoryBudgetError(
            f"the request inflates to more than {format_bytes(max_bytes)}, the worker's memory budget: "
            "refused before loading it. Send fewer or smaller minibatches per call")


def serve(directory, **kwargs) -> int:
    """The worker loop (see :func:`bridge.transport.worker.serve`)."""
    from .worker import serve as _serve

    return _serve(directory, **kwargs)


_USAGE = ("usage: python -m bridge.transport.matfile REQUEST.mat RESPONSE.mat\n"
          "       python -m bridge.transport.matfile --serve FOLDER [--idle-timeout SECONDS] [--parent-pid PID]"
          " [--memory-budget BYTES]")


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--serve"]:
        return _main_serve(argv[1:])
    if len(argv) != 2:
        print(_USAGE, file=sys.stderr)
        return 2
    try:
        run(argv[0], argv[1])
    except Exception as exc:  # noqa: BLE001 - could not even write the response
        print(f"hessiancore: could not write the response {argv[1]}: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 2
    return 0


def _main_serve(argv: list[str]) -> int:
    import argparse

    from .worker import WorkerError

    parser = argparse.ArgumentParser(prog="python -m bridge.transport.matfile --serve", add_help=False)
    parser.add_argument("folder")
    parser.add_argument("--idle-timeout", type=float, default=None)
    parser.add_argument("--parent-pid", type=int, default=None)
    parser.add_argument("--memory-budget", default=None)
    try:
        args = parser.parse_args(argv)
    except SystemExit:
        print(_USAGE, file=sys.stderr)
        return 2
    budget = args.memory_budget
    if budget is not None and budget.replace(".", "", 1).isdigit():
        budget = float(budget)
    print(f"hessiancore: serving requests in {args.folder} (create a file named 'stop' there to end)", flush=True)
    try:
        serve(args.folder, idle_timeout=args.idle_timeout, parent_pid=args.parent_pid, memory_budget=budget)
    except WorkerError as exc:
        print(f"hessiancore: {exc}", file=sys.stderr)
        return 3
    return 0


if __name__ == "__main__":
    sys.exit(main())
