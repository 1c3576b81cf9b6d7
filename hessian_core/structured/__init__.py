"""Fast exact dense Hessians, diagonals and blocks by exploiting model structure.

:func:`structured_dense` and :func:`structured_diagonal` take a Linear chain's Kronecker blocks and Hessian
backpropagation (:mod:`.chain`, :mod:`.chain_dense`, :mod:`.chain_diagonal`), a Sequential's backpropagated
square-root factors for diagonals (:mod:`.factored_diagonal`), or second-order forward propagation through
the traced graph of any other model (:mod:`.trace`, :mod:`.ops`, :mod:`.push_rules`, :mod:`.graph_engine`,
:mod:`.graph_gram`, :mod:`.graph_assembly`). They return an :class:`~.strategies.Outcome`: the result, or
``None`` with the reason, so that :class:`~hessian_core.operators.HessianOperator` falls back to its
generic vmapped products and says why.
"""

from .chain import ELEMENTWISE, Chain, NotApplicable, parse_chain
from .strategies import Outcome, dense_plan, diagonal_plan, structured_dense, structured_diagonal

__all__ = ["structured_dense", "structured_diagonal", "dense_plan", "diagonal_plan", "Outcome", "parse_chain",
           "Chain", "NotApplicable", "ELEMENTWISE"]
