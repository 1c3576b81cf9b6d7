"""The one linear-operator base of hessian_core, and its compositions.

A :class:`LinearOperator` is a square, symmetric ``(P, P)`` matrix known through its products with blocks
of vectors. Everything that acts on curvature takes one: the spectral routines, the solvers, the
optimizers. Subclasses implement :meth:`LinearOperator._matmat` (``(P, k) -> (P, k)``); the base gives,
once for all of them:

* ``shape``, ``dtype``, ``device``, ``params`` (the :class:`~hessian_core.params.ParamSpec` of the
  vectors, when the operator comes from a model), ``budget`` (bytes it may allocate) and ``progress``;
* ``matvec`` / ``matmat`` / ``@`` with input validation and a product counter ``num_matvecs``;
* ``to_dense()`` and ``diagonal()`` from products with unit vectors, within the memory budget;
* ``to_scipy()``: a ``scipy.sparse.linalg.LinearOperator`` over numpy arrays;
* composition: ``A + B``, ``A - B``, ``alpha * A``, ``-A``, ``A / alpha``, ``A + damping * I``
  (:class:`IdentityOperator`), and :func:`block_diagonal` (operators over parameter groups, as one);
* ``reuse()``: a scope inside which an operator may keep work between products (graphs); the
  routines of hessian_core open it around their loops, nothing changes the model inside;
* ``plan()``: how products and dense results are computed (which path, why, with which budget).

:func:`as_operator` turns a dense tensor or array, a scipy operator, or anything with ``shape`` and
``matmat``, into a :class:`LinearOperator`; an operator is returned as it is.
"""

from __future__ import annotations

import contextlib
import math
import numbers

import numpy as np
import torch

from ..errors import InvalidInputError, NonFiniteError
from ..memory import check_fits, format_bytes, resolve_budget


class LinearOperator:
    """Symmetric ``(P, P)`` operator on torch blocks; see the module docstring.

    Args:
        size: ``P``.
        dtype, device: of the vectors it takes and returns.
        params: the :class:`~hessian_core.params.ParamSpec` of the vectors (parameter-shaped input and
            output, labels), or ``None``.
        budget: bytes it may allocate (int or ``"2GB"``; ``None``: half of what is free now).
        progress: tqdm bars for long work (``None``: only on a terminal).
    """

    #: short name used in messages and progress bars
    kind = "operator"

    def __init__(self, size: int, dtype: torch.dtype, device, *, params=None, budget=None,
                 progress: bool | None = None):
        if isinstance(size, bool) or not isinstance(size, numbers.Integral) or size < 1:
            raise InvalidInputError(f"an operator needs a size P >= 1, got {size!r}")
        self.size = int(size)
        self.dtype = dtype
        self.device = torch.device(device)
        self.params = params
        self.budget = budget if isinstance(budget, int) and not isinstance(budget, bool) and budget > 0 \
            else resolve_budget(budget, self.device)
        self.progress = progress
        #: products made so far (columns of every ``matmat``), for the routines' accounting
        self.num_matvecs = 0

    # -- description -------------------------------------------------------------------------------
    @property
    def shape(self) -> tuple[int, int]:
        return (self.size, self.size)

    @property
    def itemsize(self) -> int:
        return torch.empty((), dtype=self.dtype).element_size()

    def __repr__(self) -> str:
        return f"{type(self).__name__}(P={self.size}, dtype={self.dtype}, device={self.device})"

    def plan(self) -> dict:
        """How this operator computes its products and dense results (a dict for people and tests)."""
        return {"operator": type(self).__name__, "size": self.size, "budget": format_bytes(self.budget)}

    def unflatten(self, v: torch.Tensor):
        """``(P,)`` -> list of param-shaped tensors, or ``None`` when the operator has no parameters."""
        return None if self.params is None else self.params.unflatten(v)

    def check_fits(self, nbytes: int, what: str, instead: str) -> None:
        """Raise :class:`~hessian_core.errors.MemoryBudgetError` when ``nbytes`` exceed the budget."""
        check_fits(nbytes, self.budget, what, instead)

    # -- products ----------------------------------------------------------------------------------
    def as_block(self, V, name: str = "V") -> torch.Tensor:
        """``V`` as a ``(P,)`` or ``(P, k)`` tensor of this dtype and device (parameter-shaped lists are
        flattened when the operator has ``params``); complex, meta-device and non-finite input refused."""
        if self.params is not None:
            return self.params.as_flat(V, name)
        from ..params import _real_tensor

        t = _real_tensor(V, name)
        if t.dim() not in (1, 2) or t.shape[0] != self.size:
            raise InvalidInputError(f"{name} has shape {tuple(t.shape)}; expected ({self.size},) or ({self.size}, k)")
        t = t.to(device=self.device, dtype=self.dtype)
        if t.numel() and not math.isfinite(float(t.sum())) and not bool(torch.isfinite(t).all()):
            raise InvalidInputError(f"{name} has NaN or Inf entries")
        return t

    def matvec(self, v):
        """``A v`` for a flat ``(P,)`` vector (or a list of param-shaped tensors, answered likewise)."""
        as_list = isinstance(v, (list, tuple))
        flat = self.as_block(v, "v")
        if flat.dim() != 1:
            raise InvalidInputError(f"matvec takes a vector of shape ({self.size},), got {tuple(flat.shape)}; "
                                    "use matmat")
        out = self._counted(flat.unsqueeze(1)).squeeze(1)
        return self.params.unflatten(out) if as_list and self.params is not None else out

    def matmat(self, V) -> torch.Tensor:
        """``A V`` for ``V`` of shape ``(P, k)`` (a ``(P,)`` vector is taken as one column)."""
        V = self.as_block(V)
        return self._counted(V[:, None] if V.dim() == 1 else V)

    def _counted(self, V: torch.Tensor) -> torch.Tensor:
        if V.shape[1] == 0:
            return torch.zeros_like(V)
        out = self._matmat(V)
        if out.shape != V.shape:
            raise InvalidInputError(
                f"{type(self).__name__} returned shape {tuple(out.shape)} for a block of shape {tuple(V.shape)}")
        self.num_matvecs += V.shape[1]
        return out if out.dtype == self.dtype and out.device == self.device else out.to(self.device, self.dtype)

    def _matmat(self, V: torch.Tensor) -> torch.Tensor:
        """``A V`` for a validated ``V`` of shape ``(P, k)``, ``k >= 1``: what subclasses implement."""
        raise NotImplementedError

    def __matmul__(self, other):
        if isinstance(other, LinearOperator):
            raise InvalidInputError("products of two operators are not operators here (not symmetric in "
                                    "general); apply them in turn: A @ (B @ v)")
        if isinstance(other, (list, tuple)):
            return self.matvec(other)
        other_t = torch.as_tensor(other)
        return self.matvec(other_t) if other_t.dim() == 1 else self.matmat(other_t)

    @contextlib.contextmanager
    def reuse(self):
        """Inside, the operator may keep work between products (the forward/backward graph of a
        one-batch objective). Nothing that the products depend on may change inside: hessian_core opens
        this scope around its own loops (Lanczos, CG, dense columns); open it around your own loop of
        products when you change nothing in between (``with op.reuse(): scipy.sparse.linalg.eigsh(...)``)."""
        yield self

    def preferred_block(self, k: int, cost: float = 1.0) -> int:
        """Vectors to hand to one ``matmat`` (``k`` or 1) for a routine that needs ``cost`` times more products
        with blocks of ``k`` than with single vectors: ``k`` when a block's product is more than ``cost``
        times cheaper per column. Here blocks are one matrix product, so ``k``; curvature operators measure."""
        return k

    # -- dense results -----------------------------------------------------------------------------
    def dense_columns(self, reserved: int) -> int:
        """Columns per product when forming dense results: what the budget leaves after ``reserved`` bytes
        (each column costs about four vectors here; subclasses that know better override)."""
        per = 4 * self.size * self.itemsize
        return int(max(1, min(self.size, (self.budget - reserved) // per, 512)))

    def to_dense(self) -> torch.Tensor:
        """The whole ``(P, P)`` matrix from products with blocks of unit vectors, within the budget."""
        P = self.size
        self.check_fits(P * P * self.itemsize, f"the dense {P} x {P} {self.kind} ({self.dtype})",
                        "the matrix-free products (matvec/matmat), the diagonal, or eigsh")
        out = torch.empty(P, P, dtype=self.dtype, device=self.device)
        step = self.dense_columns(P * P * self.itemsize)
        with self.reuse():
            for a in range(0, P, step):
                b = min(a + step, P)
                out[:, a:b] = self._counted(unit_columns(P, a, b, self.dtype, self.device))
        return out

    def diagonal(self) -> torch.Tensor:
        """The exact diagonal ``(P,)`` from products with unit vectors (``P`` products)."""
        P = self.size
        out = torch.empty(P, dtype=self.dtype, device=self.device)
        step = self.dense_columns(0)
        with self.reuse():
            for a in range(0, P, step):
                b = min(a + step, P)
                cols = self._counted(unit_columns(P, a, b, self.dtype, self.device))
                out[a:b] = cols[torch.arange(a, b), torch.arange(b - a)]
        return out

    def to_scipy(self, dtype=np.float64):
        """A ``scipy.sparse.linalg.LinearOperator`` over numpy arrays (float64 by default). Each product
        goes through this operator (counted); wrap a loop of them in :meth:`reuse` to share work."""
        from scipy.sparse.linalg import LinearOperator as ScipyLinearOperator

        def mv(x):
            x = np.asarray(x)
            t = torch.as_tensor(x.reshape(x.shape[0], -1), dtype=self.dtype, device=self.device)
            y = self.matmat(t).cpu().numpy().astype(dtype, copy=False)
            return y.reshape(x.shape)

        return ScipyLinearOperator(self.shape, matvec=mv, rmatvec=mv, matmat=mv, rmatmat=mv, dtype=dtype)

    # -- composition -------------------------------------------------------------------------------
    def __add__(self, other):
        if isinstance(other, LinearOperator):
            return SumOperator([self, other])
        if isinstance(other, numbers.Number) and other == 0:
            return self  # sum() starts from 0
        raise InvalidInputError(
            f"cannot add {type(other).__name__} to an operator; add an operator, e.g. op + 0.1 * IdentityOperator(op)")

    def __radd__(self, other):
        return self.__add__(other)

    def __sub__(self, other):
        if isinstance(other, LinearOperator):
            return SumOperator([self, ScaledOperator(-1.0, other)])
        return self.__add__(other)

    def __neg__(self):
        return ScaledOperator(-1.0, self)

    def __mul__(self, alpha):
        if isinstance(alpha, bool) or not isinstance(alpha, numbers.Real):
            if isinstance(alpha, torch.Tensor) and alpha.numel() == 1 and not alpha.is_complex():
                alpha = float(alpha)
            else:
                raise InvalidInputError(f"an operator can be scaled by a real number, not {type(alpha).__name__}")
        return ScaledOperator(float(alpha), self)

    __rmul__ = __mul__

    def __truediv__(self, alpha):
        return self * (1.0 / float(alpha))


def unit_columns(P: int, a: int, b: int, dtype, device) -> torch.Tensor:
    """Columns ``a..b-1`` of the ``P x P`` identity, ``(P, b - a)``."""
    E = torch.zeros(P, b - a, dtype=dtype, device=device)
    E[torch.arange(a, b), torch.arange(b - a)] = 1
    return E


def _common(ops) -> dict:
    """Shared size, dtype, device, params and the tightest budget of operands that must match."""
    first = ops[0]
    for op in ops[1:]:
        if op.size != first.size:
            raise InvalidInputError(f"operators of sizes {first.size} and {op.size} cannot be combined")
        if op.dtype != first.dtype or op.device != first.device:
            raise InvalidInputError(f"operators on {first.dtype}/{first.device} and {op.dtype}/{op.device} cannot "
                                    "be combined; build them with the same dtype and device")
    params = next((op.params for op in ops if op.params is not None), None)
    return dict(size=first.size, dtype=first.dtype, device=first.device, params=params,
                budget=min(op.budget for op in ops), progress=first.progress)


class ScaledOperator(LinearOperator):
    """``alpha * A``."""

    kind = "scaled operator"

    def __init__(self, alpha: float, op: LinearOperator):
        c = _common([op])
        super().__init__(c["size"], c["dtype"], c["device"], params=c["params"], budget=c["budget"],
                         progress=c["progress"])
        if isinstance(op, ScaledOperator):
            alpha, op = alpha * op.alpha, op.op
        self.alpha = float(alpha)
        self.op = op

    def __repr__(self) -> str:
        return f"{self.alpha:g} * {self.op!r}"

    def _matmat(self, V):
        return self.alpha * self.op.matmat(V)

    def reuse(self):
        return self.op.reuse()

    def preferred_block(self, k: int, cost: float = 1.0) -> int:
        return self.op.preferred_block(k, cost)

    def plan(self) -> dict:
        return {**super().plan(), "alpha": self.alpha, "of": self.op.plan()}

    def diagonal(self):
        return self.alpha * self.op.diagonal()

    def to_dense(self):
        return self.alpha * self.op.to_dense()


class SumOperator(LinearOperator):
    """``A_1 + A_2 + ...`` (nested sums are flattened)."""

    kind = "sum of operators"

    def __init__(self, terms):
        flat = []
        for t in terms:
            flat += t.terms if isinstance(t, SumOperator) else [t]
        c = _common(flat)
        super().__init__(c["size"], c["dtype"], c["device"], params=c["params"], budget=c["budget"],
                         progress=c["progress"])
        self.terms = flat

    def __repr__(self) -> str:
        return " + ".join(repr(t) for t in self.terms)

    def _matmat(self, V):
        out = self.terms[0].matmat(V)
        for t in self.terms[1:]:
            out = out + t.matmat(V)
        return out

    @contextlib.contextmanager
    def reuse(self):
        with contextlib.ExitStack() as stack:
            for t in self.terms:
                stack.enter_context(t.reuse())
            yield self

    def preferred_block(self, k: int, cost: float = 1.0) -> int:
        return min(t.preferred_block(k, cost) for t in self.terms)

    def plan(self) -> dict:
        return {**super().plan(), "terms": [t.plan() for t in self.terms]}

    def diagonal(self):
        return sum(t.diagonal() for t in self.terms)


class IdentityOperator(LinearOperator):
    """The identity ``I`` of size ``P``: ``IdentityOperator(op)`` matches an operator (size, dtype, device,
    parameters), ``IdentityOperator(P, dtype=..., device=...)`` stands alone. ``op + damping * I`` damps."""

    kind = "identity"

    def __init__(self, size_or_like, dtype: torch.dtype = torch.float64, device="cpu"):
        if isinstance(size_or_like, LinearOperator):
            like = size_or_like
            super().__init__(like.size, like.dtype, like.device, params=like.params, budget=like.budget,
                             progress=like.progress)
        else:
            super().__init__(size_or_like, dtype, device)

    def _matmat(self, V):
        return V.clone()

    def diagonal(self):
        return torch.ones(self.size, dtype=self.dtype, device=self.device)


class DenseOperator(LinearOperator):
    """A dense symmetric matrix (torch tensor) as an operator; symmetry is checked."""

    kind = "dense matrix"

    def __init__(self, A: torch.Tensor, *, params=None, budget=None, progress=None):
        if A.dim() != 2 or A.shape[0] != A.shape[1] or A.shape[0] < 1:
            raise InvalidInputError(f"the operator must be square (P, P) with P >= 1, got shape {tuple(A.shape)}")
        if not A.dtype.is_floating_point:
            if A.dtype.is_complex:
                raise InvalidInputError("complex matrices are not supported; the curvature routines need real "
                                        "symmetric ones")
            A = A.to(torch.float64)
        if not bool(torch.isfinite(A).all()):
            raise NonFiniteError("the matrix has NaN or Inf entries")
        scale = float(A.abs().max())
        asym = float((A - A.T).abs().max())
        if asym > 100 * torch.finfo(A.dtype).eps * max(scale, 1e-300) * A.shape[0] ** 0.5:
            raise InvalidInputError(
                f"the matrix is not symmetric (max |A - A^T| = {asym:.3g}, max |A| = {scale:.3g}); the symmetric "
                "eigensolvers and estimators need A = A^T, e.g. use (A + A.T) / 2"
            )
        super().__init__(A.shape[0], A.dtype, A.device, params=params, budget=budget, progress=progress)
        self.matrix = A

    def _matmat(self, V):
        return self.matrix @ V

    def to_dense(self):
        return self.matrix.clone()

    def diagonal(self):
        return self.matrix.diagonal().clone()


class ScipyOperator(LinearOperator):
    """A scipy ``LinearOperator`` (or sparse matrix) as an operator on CPU torch tensors."""

    kind = "scipy operator"

    def __init__(self, x):
        from scipy.sparse.linalg import aslinearoperator

        L = aslinearoperator(x)
        if len(L.shape) != 2 or L.shape[0] != L.shape[1] or L.shape[0] < 1:
            raise InvalidInputError(f"the operator must be square (P, P) with P >= 1, got shape {tuple(L.shape)}")
        np_dtype = np.dtype(L.dtype) if L.dtype is not None else np.dtype(np.float64)
        if np_dtype.kind == "c":
            raise InvalidInputError("complex operators are not supported; the curvature routines need real ones")
        super().__init__(L.shape[0], torch.float32 if np_dtype == np.float32 else torch.float64, "cpu")
        self.linear_operator = L
        self._np_dtype = np_dtype if np_dtype.kind == "f" else np.dtype(np.float64)

    def _matmat(self, V):
        out = self.linear_operator.matmat(V.detach().cpu().numpy().astype(self._np_dtype))
        return torch.as_tensor(np.asarray(out), dtype=self.dtype).reshape(V.shape)


class FunctionOperator(LinearOperator):
    """An operator given by a function ``matmat(V (P, k)) -> (P, k)`` (e.g. products computed elsewhere,
    such as MATLAB's own double backpropagation). The function must be symmetric and linear."""

    kind = "operator"

    def __init__(self, matmat, size: int, dtype: torch.dtype = torch.float64, device="cpu", *, params=None,
                 budget=None, progress=None, name: str | None = None):
        if not callable(matmat):
            raise InvalidInputError(f"matmat must be callable, got {type(matmat).__name__}")
        super().__init__(size, dtype, device, params=params, budget=budget, progress=progress)
        self.function = matmat
        self.name = name or getattr(matmat, "__name__", "function")

    def __repr__(self) -> str:
        return f"FunctionOperator({self.name}, P={self.size}, dtype={self.dtype})"

    def _matmat(self, V):
        out = self.function(V)
        return out if isinstance(out, torch.Tensor) else torch.as_tensor(np.asarray(out), dtype=self.dtype)


class BlockDiagonalOperator(LinearOperator):
    """Operators on disjoint groups of the entries of a ``(P,)`` vector, as one ``(P, P)`` operator: block
    ``i`` acts on the entries ``index[i]`` and is zero elsewhere (entries in no group give zero rows).
    Built by :func:`block_diagonal` from operators over parameter groups."""

    kind = "block-diagonal operator"

    def __init__(self, blocks, size: int, *, params=None):
        blocks = [(torch.as_tensor(idx, dtype=torch.long), op) for idx, op in blocks]
        if not blocks:
            raise InvalidInputError("a block-diagonal operator needs at least one block")
        seen = torch.zeros(size, dtype=torch.bool)
        for idx, op in blocks:
            if idx.numel() != op.size:
                raise InvalidInputError(f"a block of size {op.size} was given {idx.numel()} positions")
            if idx.numel() and (int(idx.min()) < 0 or int(idx.max()) >= size):
                raise InvalidInputError(f"block positions must lie in [0, {size})")
            if bool(seen[idx].any()):
                raise InvalidInputError("the blocks of a block-diagonal operator must not overlap")
            seen[idx] = True
        first = blocks[0][1]
        for _, op in blocks:
            if op.dtype != first.dtype or op.device != first.device:
                raise InvalidInputError("the blocks must share one dtype and device")
        super().__init__(size, first.dtype, first.device, params=params,
                         budget=min(op.budget for _, op in blocks), progress=first.progress)
        self.blocks = [(idx.to(first.device), op) for idx, op in blocks]

    def _matmat(self, V):
        out = torch.zeros_like(V)
        for idx, op in self.blocks:
            out[idx] = op.matmat(V[idx])
        return out

    @contextlib.contextmanager
    def reuse(self):
        with contextlib.ExitStack() as stack:
            for _, op in self.blocks:
                stack.enter_context(op.reuse())
            yield self

    def diagonal(self):
        out = torch.zeros(self.size, dtype=self.dtype, device=self.device)
        for idx, op in self.blocks:
            out[idx] = op.diagonal()
        return out

    def to_dense(self):
        P = self.size
        self.check_fits(P * P * self.itemsize, f"the dense {P} x {P} {self.kind} ({self.dtype})",
                        "the matrix-free products or each block's to_dense()")
        out = torch.zeros(P, P, dtype=self.dtype, device=self.device)
        for idx, op in self.blocks:
            out[idx[:, None], idx[None, :]] = op.to_dense()
        return out

    def preferred_block(self, k: int, cost: float = 1.0) -> int:
        return min(op.preferred_block(k, cost) for _, op in self.blocks)

    def plan(self) -> dict:
        return {**super().plan(), "blocks": [op.plan() for _, op in self.blocks]}


def block_diagonal(ops, params=None) -> BlockDiagonalOperator:
    """One ``(P, P)`` operator from operators over groups of parameters (e.g. ``op.with_params(group)`` for
    several groups): each acts on its own parameters' entries of the full vector of ``params`` (a
    :class:`~hessian_core.params.ParamSpec`; default: that of the model of the first operator, all
    parameters that require grad). Parameters in no group give zero rows and columns."""
    ops = list(ops)
    if not ops or any(not isinstance(op, LinearOperator) or op.params is None for op in ops):
        raise InvalidInputError("block_diagonal takes operators built from a model (with .params), one per group")
    if params is None:
        objective = getattr(ops[0], "objective", None)
        if objective is None:
            raise InvalidInputError("block_diagonal needs params= (the full ParamSpec) for these operators")
        from ..params import ParamSpec

        params = ParamSpec(objective.model)
    return BlockDiagonalOperator([(params.positions_of(op.params), op) for op in ops], params.numel, params=params)


def as_operator(x) -> LinearOperator:
    """``x`` as a :class:`LinearOperator`: an operator as it is; a torch tensor or numpy array (checked
    symmetric) as :class:`DenseOperator`; a scipy operator or sparse matrix as :class:`ScipyOperator`;
    anything with ``shape`` and ``matmat`` (torch blocks) as :class:`FunctionOperator`."""
    if isinstance(x, LinearOperator):
        return x
    if isinstance(x, np.ndarray) or (isinstance(x, (list, tuple)) and len(x) and isinstance(x[0], (list, tuple))):
        x = torch.as_tensor(np.asarray(x))
    if isinstance(x, torch.Tensor):
        return DenseOperator(x)
    if (type(x).__module__ or "").startswith("scipy.sparse"):
        return ScipyOperator(x)
    if hasattr(x, "matmat") and hasattr(x, "shape"):
        shape = tuple(x.shape)
        if len(shape) != 2 or shape[0] != shape[1]:
            raise InvalidInputError(f"the operator must be square (P, P), got shape {shape}")
        params = getattr(x, "params", None)
        return FunctionOperator(x.matmat, shape[0], getattr(x, "dtype", None) or torch.float64,
                                getattr(x, "device", None) or "cpu",
                                params=params if hasattr(params, "unflatten") else None,
                                budget=getattr(x, "budget", None), name=type(x).__name__)
    raise InvalidInputError(
        f"cannot use a {type(x).__name__} as a symmetric operator; pass a LinearOperator (HessianOperator, "
        "GGNOperator, ...), a square torch tensor or numpy array, or a scipy LinearOperator"
    )


class CountingView(LinearOperator):
    """The same operator with a product counter of its own, starting at zero: what one routine (eigsh,
    trace, ...) reports as the products it used. Products, reuse scope and budget are the operator's."""

    def __init__(self, op: LinearOperator):
        super().__init__(op.size, op.dtype, op.device, params=op.params, budget=op.budget, progress=op.progress)
        self.op = op
        self.kind = op.kind

    def __repr__(self) -> str:
        return repr(self.op)

    def _matmat(self, V):
        return self.op.matmat(V)

    def reuse(self):
        return self.op.reuse()

    def preferred_block(self, k: int, cost: float = 1.0) -> int:
        return self.op.preferred_block(k, cost)

    def plan(self) -> dict:
        return self.op.plan()


def counting_view(x) -> CountingView:
    """:func:`as_operator` of ``x``, seen through a fresh :class:`CountingView`."""
    return CountingView(as_operator(x))
