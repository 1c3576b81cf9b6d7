"""The Newton family as ``torch.optim`` optimizers: dense :class:`Newton`, matrix-free :class:`NewtonCG`
(Steihaug trust region or line search) and Martens' :class:`HessianFree` (GGN, sub-sampled curvature).

All take one parameter group and ``step(closure)`` with a closure that re-evaluates the model and returns
the loss; see ``docs/newton.md``.
"""

from .base import CurvatureOptimizer
from .dense_newton import Newton
from .hessian_free import HessianFree
from .newton_cg import NewtonCG

__all__ = ["Newton", "NewtonCG", "HessianFree", "CurvatureOptimizer"]
