"""Exact Hessian of the loss with respect to the parameters, as a matrix-free operator."""

from __future__ import annotations

import torch
from torch.func import grad, jvp, vjp

from ..errors import InvalidInputError
from .base import CurvatureOperator

STRATEGIES = ("auto", "structured", "generic")


class HessianOperator(CurvatureOperator):
    """Exact Hessian ``H = d^2 L / d theta^2`` of the globally normalized loss (see :mod:`..objective`).

    Products are reverse-over-reverse: one forward and backward per batch builds ``grad`` with its graph
    (``vjp(grad(loss))``), and every chunk of vectors is one vmapped double-backward through it. Since
    ``H`` is symmetric, ``vjp`` of the gradient is ``H v``. Reverse-over-reverse needs only double
    backward, which every op has. Blocks of many vectors first try forward-over-reverse
    (``jvp(grad(loss))``, vmapped, as ``torch.func.hessian``), often faster through convolutions; it trips
    on some torch losses (e.g. ``MSELoss``), and then the operator keeps to reverse-over-reverse.

    ``to_dense()`` and ``diagonal()`` pick a strategy (``strategy=``): ``"auto"`` (default) uses the
    structured Linear-chain path of :mod:`hessian_core.structured` when the model allows it and the
    generic chunked products otherwise; ``"generic"`` always uses the products; ``"structured"`` raises
    :class:`~hessian_core.errors.InvalidInputError` when the structured path does not apply. The strategy
    used last is in ``last_strategy``.
    """

    kind = "Hessian"

    def __init__(self, model, loss_fn, data, *, strategy: str = "auto", chunk_size: int | None = None,
                 **objective_options):
        super().__init__(model, loss_fn, data, chunk_size=chunk_size, **objective_options)
        self.strategy = _check_strategy(strategy)

    @classmethod
    def from_objective(cls, objective, chunk_size: int | None = None, strategy: str = "auto"):
        op = super().from_objective(objective, chunk_size)
        op.strategy = _check_strategy(strategy)
        return op

    def with_params(self, params):
        return type(self).from_objective(self.objective.with_params(params), self._chunk,
                                         getattr(self, "strategy", "auto"))

    def _prepare(self, ctx):
        primals = self.params.primals()
        graph = []  # vjp of the gradient, built on first use (one forward and backward with graph)

        def reverse():  # called outside vmap, so the graph belongs to no vmap level
            if not graph:
                graph.append(vjp(grad(ctx.loss), primals)[1])
            return graph[0]

        def apply(V):
            if V.shape[1] == 1:  # one vector (matvec): a plain double backward, no vmap overhead
                tangent = tuple(t[..., 0] for t in self.params.unflatten(V))
                return self.params.flatten(reverse()(tangent)[0])[:, None]
            if getattr(self, "_forward_over_reverse_ok", True) and not self.objective.train_mode:
                # Many vectors (dense, diagonal): forward-over-reverse is often faster through convolutions;
                # where an op lacks forward-mode support (e.g. MSELoss's ZeroTensor in torch 2.13) it raises
                # and this operator stays with reverse-over-reverse. Not in train mode: each chunk reruns
                # the forward, and dropout masks must stay those of the one reverse-mode graph.
                try:
                    return self._batched(lambda t: jvp(grad(ctx.loss), (primals,), (t,))[1], V)
                except (RuntimeError, NotImplementedError):
                    # (Objective.forward has already put the model's own parameters back.)
                    self._forward_over_reverse_ok = False
                    self._vmap_ok = True
            vjp_fn = reverse()
            return self._batched(lambda t: vjp_fn(t)[0], V)

        return apply

    # -- dense results: structured when possible -----------------------------------------------------
    def _structured(self, fn, what: str):
        strategy = getattr(self, "strategy", "auto")
        if strategy == "generic":
            return None
        result = fn(self.objective)
        if result is None and strategy == "structured":
            raise InvalidInputError(
                f"strategy='structured': the {what} of this model cannot use the structured path (it needs an "
                "nn.Sequential of Linear layers -- for the diagonal also conv and pooling layers -- with "
                "elementwise activations, and a loss that sums over samples); use strategy='auto' or 'generic'"
            )
        return result

    def to_dense(self) -> torch.Tensor:
        """The whole ``(P, P)`` Hessian: structured (Kronecker blocks, one GEMM per layer pair) for Linear
        chains, else chunked vmapped products; memory checked against the budget either way."""
        from ..structured import structured_dense

        P = self.params.numel
        self._dense_check(P * P * torch.empty((), dtype=self.dtype).element_size(),
                          f"the dense {P} x {P} {self.kind} matrix ({self.dtype})")
        H = self._structured(structured_dense, "dense Hessian")
        self.last_strategy = "structured" if H is not None else "generic"
        return H if H is not None else super().to_dense()

    def diagonal(self) -> torch.Tensor:
        """Exact diagonal ``(P,)``: one Hessian backpropagation per batch for Linear chains and Sequentials
        with convolutions (:mod:`hessian_core.structured`), else products with unit vectors."""
        from ..structured import structured_diagonal

        d = self._structured(structured_diagonal, "Hessian diagonal")
        self.last_strategy = "structured" if d is not None else "generic"
        return d if d is not None else super().diagonal()


def _check_strategy(strategy: str) -> str:
    if strategy not in STRATEGIES:
        raise InvalidInputError(f"strategy must be one of {STRATEGIES}, got {strategy!r}")
    return strategy
