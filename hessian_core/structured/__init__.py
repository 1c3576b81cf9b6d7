"""Fast exact dense Hessians, diagonals and blocks by exploiting model structure.

:func:`structured_dense` and :func:`structured_diagonal` handle chains of ``nn.Linear`` layers with
elementwise activations (see :mod:`.chain`; Kronecker-structured blocks, :mod:`.chain_dense`, :mod:`.chain_diagonal`),
:func:`structured_diagonal` also Sequentials with convolutions and pooling (:mod:`.factored_diagonal`), and both
return ``None`` for anything else, so that :class:`~hessian_core.operators.HessianOperator` falls back to
its generic vmapped products.
"""

from .chain import ELEMENTWISE, Chain, NotApplicable, parse_chain
from .strategies import dense_plan, diagonal_plan, structured_dense, structured_diagonal

__all__ = ["structured_dense", "structured_diagonal", "dense_plan", "diagonal_plan", "parse_chain", "Chain",
           "NotApplicable", "ELEMENTWISE"]
