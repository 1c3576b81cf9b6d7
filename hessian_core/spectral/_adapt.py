"""One view of everything the spectral routines accept: a symmetric ``(P, P)`` operator on torch blocks.

:func:`as_operator` takes a core :class:`~hessian_core.operators.CurvatureOperator` (or anything with
``.shape`` and ``.matmat``), a dense torch tensor, a numpy array, a scipy sparse matrix or a scipy
``LinearOperator``, and returns a :class:`SpectralOperator` that counts the products it makes.
"""

from __future__ import annotations

import numpy as np
import torch

from ..errors import InvalidInputError, NonFiniteError
from ..memory import check_fits, resolve_budget


class SpectralOperator:
    """Symmetric ``(P, P)`` operator: ``matmat(V (P, k)) -> (P, k)`` on torch tensors.

    Attributes:
        shape, dtype, device: of the operator and of the blocks it takes and returns.
        params: the :class:`~hessian_core.params.ParamSpec` when the operator comes from a model, else None.
        num_matvecs: products made so far through this view (columns of all ``matmat`` calls).
        progress: the source's ``progress=`` setting (None when it has none).
    """

    def __init__(self, matmat, shape, dtype, device, *, params=None, budget=None, progress=None):
        self._matmat = matmat
        self.shape = (int(shape[0]), int(shape[1]))
        self.dtype = dtype
        self.device = torch.device(device)
        self.params = params
        self.budget = budget
        self.progress = progress
        self.num_matvecs = 0

    @property
    def size(self) -> int:
        return self.shape[0]

    def matmat(self, V: torch.Tensor) -> torch.Tensor:
        """``A V`` for ``V`` of shape ``(P, k)``; counts ``k`` products."""
        out = self._matmat(V)
        if tuple(out.shape) != tuple(V.shape):
            raise InvalidInputError(
                f"the operator returned shape {tuple(out.shape)} for a block of shape {tuple(V.shape)}"
            )
        self.num_matvecs += V.shape[1]
        return out.to(dtype=self.dtype, device=self.device)

    def unflatten(self, v: torch.Tensor):
        """``(P,)`` -> list of param-shaped tensors, or None when the operator has no parameters."""
        return None if self.params is None else self.params.unflatten(v)

    def check_fits(self, nbytes: int, what: str, instead: str) -> None:
        """Raise :class:`~hessian_core.errors.MemoryBudgetError` when ``nbytes`` exceed the budget."""
        budget = self.budget if self.budget is not None else resolve_budget(None, self.device)
        check_fits(nbytes, budget, what, instead)

    def itemsize(self) -> int:
        return torch.empty((), dtype=self.dtype).element_size()


def check_int(value, name: str, least: int = 1, even: bool = False, why: str = "") -> int:
    """``value`` if it is an int ``>= least`` (and even when asked), else :class:`InvalidInputError`."""
    if isinstance(value, bool) or not isinstance(value, int) or value < least or (even and value % 2):
        kind = "an even int" if even else "an int"
        raise InvalidInputError(f"{name} must be {kind} >= {least}{why}, got {value!r}")
    return value


def as_operator(x) -> SpectralOperator:
    """Wrap ``x`` (see the module docstring) as a fresh :class:`SpectralOperator` with a zero product count."""
    if isinstance(x, SpectralOperator):
        return SpectralOperator(
            x._matmat, x.shape, x.dtype, x.device, params=x.params, budget=x.budget, progress=x.progress
        )
    if isinstance(x, np.ndarray) or (isinstance(x, (list, tuple)) and len(x) and isinstance(x[0], (list, tuple))):
        x = torch.as_tensor(np.asarray(x))
    if isinstance(x, torch.Tensor):
        return _dense(x)
    if _is_scipy(x):
        return _scipy(x)
    if hasattr(x, "matmat") and hasattr(x, "shape"):
        return _curvature(x)
    raise InvalidInputError(
        f"cannot use a {type(x).__name__} as a symmetric operator; pass a CurvatureOperator (HessianOperator, "
        "GGNOperator, ...), a square torch tensor or numpy array, or a scipy LinearOperator"
    )


def _square(shape) -> tuple[int, int]:
    if len(shape) != 2 or shape[0] != shape[1] or shape[0] < 1:
        raise InvalidInputError(f"the operator must be square (P, P) with P >= 1, got shape {tuple(shape)}")
    return int(shape[0]), int(shape[1])


def _dense(A: torch.Tensor) -> SpectralOperator:
    _square(A.shape)
    if not A.dtype.is_floating_point:
        if A.dtype.is_complex:
            raise InvalidInputError("complex matrices are not supported; the curvature routines need real symmetric")
        A = A.to(torch.float64)
    if not bool(torch.isfinite(A).all()):
        raise NonFiniteError("the matrix has NaN or Inf entries")
    scale = float(A.abs().max()) if A.numel() else 0.0
    asym = float((A - A.T).abs().max()) if A.numel() else 0.0
    if asym > 100 * torch.finfo(A.dtype).eps * max(scale, 1e-300) * A.shape[0] ** 0.5:
        raise InvalidInputError(
            f"the matrix is not symmetric (max |A - A^T| = {asym:.3g}, max |A| = {scale:.3g}); the symmetric "
            "eigensolvers and estimators need A = A^T, e.g. use (A + A.T) / 2"
        )
    return SpectralOperator(lambda V: A @ V.to(A.device, A.dtype), A.shape, A.dtype, A.device)


def _is_scipy(x) -> bool:
    mod = type(x).__module__ or ""
    return mod.startswith("scipy.sparse")


def _scipy(x) -> SpectralOperator:
    from scipy.sparse.linalg import aslinearoperator

    L = aslinearoperator(x)
    _square(L.shape)
    np_dtype = np.dtype(L.dtype) if L.dtype is not None else np.dtype(np.float64)
    dtype = torch.float32 if np_dtype == np.float32 else torch.float64

    def matmat(V):
        out = L.matmat(V.detach().cpu().numpy().astype(np_dtype if np_dtype.kind == "f" else np.float64))
        return torch.as_tensor(np.asarray(out), dtype=dtype)

    return SpectralOperator(matmat, L.shape, dtype, "cpu")


def _curvature(x) -> SpectralOperator:
    shape = _square(tuple(x.shape))
    params = getattr(x, "params", None)
    if params is not None and not hasattr(params, "unflatten"):
        params = None
    objective = getattr(x, "objective", None)
    dtype = getattr(x, "dtype", None) or (params.dtype if params is not None else torch.float64)
    device = getattr(x, "device", None) or (params.device if params is not None else "cpu")
    return SpectralOperator(
        x.matmat,
        shape,
        dtype,
        device,
        params=params,
        budget=getattr(objective, "budget", None),
        progress=getattr(objective, "progress", None),
    )
