"""Timing and peak-memory measurement for the benchmarks.

Timing (in the benchmark's own process, with the allocator's default settings, as users run): every method
is called once (warm-up; its answer is kept for the accuracy check), then the methods are called round-robin
``repeats`` times and the median is reported; interleaving spreads the load of a shared machine evenly over
the methods, so ratios are fairer than absolute times. Each timed call comes right after an untimed call of
the same method (see :func:`interleaved`): what a user's loop of calls costs, not the page faults of the
memory the method before it gave back.

Peak memory (in a fresh child process per method, :func:`peak_bytes`): the method runs once, then the
resident-set high-water mark (``VmHWM`` in ``/proc/self/status``) is reset (``echo 5 >
/proc/self/clear_refs``) and read after a second call; the peak is its excess over the resident size just
before the call, so it includes the result. Only there glibc is told to serve every block over 64 KiB with
its own mmap (:func:`setup_malloc`), so freed tensors go back to the kernel at once and the high-water mark
follows the live tensors, and ``malloc_trim(0)`` returns free heap pages before the measurement. That setting
changes speed, which is why it never applies to timings. Linux only; elsewhere peaks are reported as n/a.
"""

from __future__ import annotations

import ctypes
import gc
import statistics
import time


def setup_malloc() -> bool:
    """Make large frees return memory to the kernel at once (so RSS tracks live tensors). For memory
    measurements in child processes only: it slows allocation-heavy code down."""
    try:
        libc = ctypes.CDLL("libc.so.6")
        return bool(libc.mallopt(-3, 64 * 1024))  # M_MMAP_THRESHOLD; fixing it also stops its auto-tuning
    except OSError:
        return False


def _trim() -> None:
    """Give the heap's free pages back to the kernel, so reusing them shows up in the resident size."""
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


def _status_kib(field: str) -> int | None:
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


def peak_bytes(fn) -> int | None:
    """Peak extra resident memory (bytes) while ``fn()`` runs, result included; None if unsupported."""
    gc.collect()
    _trim()
    base = _status_kib("VmRSS")
    try:
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")
    except OSError:
        return None
    out = fn()
    peak = _status_kib("VmHWM")
    del out
    gc.collect()
    if base is None or peak is None:
        return None
    return max(peak - base, 0) * 1024


class _MallInfo2(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks",
                                                       "fsmblks", "uordblks", "fordblks", "keepcost")]


def _malloc_in_use():
    """``() -> bytes`` glibc's malloc has handed out and not got back (in-use heap plus mmapped blocks), or
    ``None`` without glibc >= 2.33 (``mallinfo2``)."""
    try:
        libc = ctypes.CDLL("libc.so.6")
        info = libc.mallinfo2
    except (OSError, AttributeError):
        return None
    info.restype = _MallInfo2

    def in_use() -> int:
        m = info()
        return m.uordblks + m.hblkhd

    return in_use


def malloc_peak_bytes(fn, interval: float = 2e-4) -> int | None:
    """Peak of the bytes malloc has handed out during ``fn()``, above the level before it, sampled by a thread
    every ``interval`` seconds (torch's kernels release the GIL), result included. Freed heap pages that glibc
    keeps do not count, so in the benchmark's own process it repeats to the MiB, where the resident-set
    high-water mark varies by tens of MiB from run to run. ``None`` without glibc's ``mallinfo2``."""
    import threading

    in_use = _malloc_in_use()
    if in_use is None:
        return None
    gc.collect()
    base = in_use()
    top = [base]
    done = threading.Event()

    def sample():
        while not done.is_set():
            top[0] = max(top[0], in_use())
            time.sleep(interval)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    try:
        out = fn()
        top[0] = max(top[0], in_use())
    finally:
        done.set()
        sampler.join()
    del out
    return top[0] - base


def interleaved(fns: dict, repeats: int, slow_seconds: float = 3.0) -> tuple[dict, dict]:
    """Median seconds per method and each method's first result. A method whose warm-up took over
    ``slow_seconds`` is repeated only twice more (so the per-element loop does not dominate the run).

    Each timed call follows an untimed call of the same method (``settle``), so no method is charged for
    another's memory: a method that frees hundreds of MiB lets glibc give them back to the kernel, and the
    next method then faults its pages in again (about 10 us a page on the benchmark machine: a 57 ms dense
    Hessian took 150 ms right after ``torch.func.hessian``). Slow methods skip the untimed call; their own
    faults are a small part of their time."""
    results, times = {}, {name: [] for name in fns}
    for name, fn in fns.items():
        t0 = time.perf_counter()
        try:
            results[name] = fn()
        except Exception as e:  # noqa: BLE001 - a peer failing is a result to report, not a crash
            results[name] = e
        times[name].append(time.perf_counter() - t0)
    for r in range(repeats):
        for name, fn in fns.items():
            slow = times[name][0] > slow_seconds
            if isinstance(results[name], Exception) or (slow and r >= 2):
                continue
            if not slow:
                fn()  # settle
            t0 = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - t0)
    med = {n: statistics.median(ts[1:] if len(ts) > 1 else ts) for n, ts in times.items()}
    return med, results
